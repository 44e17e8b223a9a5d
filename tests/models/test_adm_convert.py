"""ADM -> diffusers conversion: a converted model must compute exactly what the ADM computes.

The reference below is an independent, minimal re-implementation of guided-diffusion's ``UNetModel`` forward
(same parameter names, so its state_dict has the layout of a real ADM checkpoint). It is written from the
guided-diffusion architecture, not from the converter, and shares no code with it.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from diffedit_lab.models.adm_convert import ADMConfig, convert_state_dict, unet2d_config
from diffedit_lab.tools.convert_adm import main
from diffedit_lab.utils.errors import UserError

GROUPS = 8  # tiny channel counts; real ADM uses 32


def adm_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch, scale_shift, up=False, down=False):
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(nn.GroupNorm(GROUPS, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, out_ch * (2 if scale_shift else 1)))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, out_ch), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2, 2)
        return x

    def forward(self, x, emb):
        h = self.in_layers[1](self.in_layers[0](x))
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, ch, heads, new_order):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = nn.GroupNorm(GROUPS, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        d = c // self.heads
        if self.new_order:  # QKVAttention
            q, k, v = (z.reshape(b * self.heads, d, -1) for z in qkv.chunk(3, dim=1))
        else:  # QKVAttentionLegacy
            q, k, v = qkv.reshape(b * self.heads, 3 * d, -1).split(d, dim=1)
        s = 1 / math.sqrt(math.sqrt(d))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return (x + self.proj_out(a)).reshape(b, c, hh, ww)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion UNetModel (unconditional), written for this test."""

    def __init__(self, image_size, mc, mult, nrb, attn_res, head_ch, num_heads, learn_sigma, ss, updown, new_order):
        super().__init__()
        self.mc = mc
        emb = 4 * mc
        attn_ds = {image_size // r for r in attn_res}

        def attn(ch):
            return AttentionBlock(ch, ch // head_ch if head_ch > 0 else num_heads, new_order)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc * mult[0]
        self.input_blocks = nn.ModuleList([EmbSequential(nn.Conv2d(3, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, emb, mc * m, ss)]
                ch = mc * m
                if ds in attn_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(EmbSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                down = ResBlock(ch, emb, ch, ss, down=True) if updown else Downsample(ch)
                self.input_blocks.append(EmbSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = EmbSequential(ResBlock(ch, emb, ch, ss), attn(ch), ResBlock(ch, emb, ch, ss))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), emb, mc * m, ss)]
                ch = mc * m
                if ds in attn_ds:
                    layers.append(attn(ch))
                if level and i == nrb:
                    layers.append(ResBlock(ch, emb, ch, ss, up=True) if updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(GROUPS, ch), nn.SiLU(), nn.Conv2d(ch, 6 if learn_sigma else 3, 3, 1, 1))

    def forward(self, x, t):
        emb = self.time_embed(adm_timestep_embedding(t, self.mc))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


VARIANTS = {
    # The SDFT/FFHQ flags in miniature: legacy qkv order, scale-shift norm, residual up/down, 1 res block.
    "sdft_like": dict(
        adm=dict(
            mult=(1, 2, 2),
            nrb=1,
            attn_res=(8,),
            head_ch=16,
            num_heads=4,
            ss=True,
            updown=True,
            new_order=False,
        ),
        cfg=dict(channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8,), num_head_channels=16),
    ),
    # The other code paths: new qkv order, additive time embedding, conv resampling, a fixed head count
    # (equal widths, so every attention layer has the same head size, as diffusers requires).
    "other_options": dict(
        adm=dict(
            mult=(1, 1),
            nrb=2,
            attn_res=(16, 8),
            head_ch=-1,
            num_heads=2,
            ss=False,
            updown=False,
            new_order=True,
        ),
        cfg=dict(
            channel_mult=(1, 1),
            num_res_blocks=2,
            attention_resolutions=(16, 8),
            num_head_channels=-1,
            num_heads=2,
            use_scale_shift_norm=False,
            resblock_updown=False,
            use_new_attention_order=True,
        ),
    ),
}


def make_adm(variant: str, seed: int = 0) -> tuple[ADMUNet, ADMConfig]:
    torch.manual_seed(seed)
    spec = VARIANTS[variant]
    model = ADMUNet(16, 32, learn_sigma=True, **spec["adm"])
    with torch.no_grad():  # non-trivial norms (catches swapped norm1/norm2) and non-zero output convs
        for m in model.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
    cfg = ADMConfig(image_size=16, num_channels=32, norm_num_groups=GROUPS, learn_sigma=True, **spec["cfg"])
    return model.eval(), cfg


def _cli_args(cfg: ADMConfig, ckpt, out) -> list[str]:
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--image-size", str(cfg.image_size)]
    args += ["--num-channels", str(cfg.num_channels), "--num-res-blocks", str(cfg.num_res_blocks)]
    args += ["--channel-mult", ",".join(str(int(m)) for m in cfg.channel_mult)]
    args += ["--attention-resolutions", ",".join(map(str, cfg.attention_resolutions))]
    args += ["--num-head-channels", str(cfg.num_head_channels), "--num-heads", str(cfg.num_heads)]
    args += ["--norm-num-groups", str(cfg.norm_num_groups), "--learn_sigma", "True"]
    args += [
        "--use-scale-shift-norm",
        str(cfg.use_scale_shift_norm),
        "--resblock-updown",
        str(cfg.resblock_updown),
    ]
    args += ["--use-new-attention-order", str(cfg.use_new_attention_order)]
    return args


@pytest.mark.parametrize("variant", ["sdft_like", "other_options"])
def test_cli_conversion_reproduces_adm_outputs(variant, tmp_path):
    adm, cfg = make_adm(variant)
    ckpt, out = tmp_path / "adm.pt", tmp_path / "unet"
    torch.save(adm.state_dict(), ckpt)
    assert main(_cli_args(cfg, ckpt, out)) == 0
    unet = UNet2DModel.from_pretrained(out).eval()
    assert (out / "diffusion_pytorch_model.safetensors").is_file()

    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for t in ([0, 0, 0], [10, 10, 10], [999, 999, 999], [3, 500, 871]):
            t = torch.tensor(t)
            expected = adm(x, t)
            got = unet(x, t).sample
            assert got.shape == (3, 6, 16, 16)  # learned sigma: epsilon + variance channels
            assert expected.abs().mean() > 0.1  # the comparison is not between near-zero tensors
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_wrong_attention_order_would_be_detected():
    """The legacy/new qkv layouts really differ, so the equality test above pins the right one."""
    adm, cfg = make_adm("sdft_like")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 700])
    swapped = ADMConfig(**{**cfg.__dict__, "use_new_attention_order": True})
    unet = UNet2DModel(**unet2d_config(swapped))
    unet.load_state_dict(convert_state_dict(adm.state_dict(), swapped))
    with torch.no_grad():
        assert (unet.eval()(x, t).sample - adm(x, t)).abs().max() > 1e-3


def test_sdft_checkpoint_defaults_give_a_6_channel_256_unet():
    cfg = ADMConfig()
    config = unet2d_config(cfg)
    assert config["out_channels"] == 6 and config["sample_size"] == 256
    assert config["block_out_channels"] == (128, 128, 256, 256, 512, 512)
    # attention only at 16x16 (256 / 2**4), i.e. the 5th level, in both halves
    assert [i for i, b in enumerate(config["down_block_types"]) if b.startswith("Attn")] == [4]
    assert [i for i, b in enumerate(config["up_block_types"]) if b.startswith("Attn")] == [1]
    assert config["attention_head_dim"] == 64 and config["resnet_time_scale_shift"] == "scale_shift"


def test_scheduler_config_is_written_and_loads(tmp_path):
    adm, cfg = make_adm("sdft_like")
    torch.save(adm.state_dict(), tmp_path / "adm.pt")
    assert main(_cli_args(cfg, tmp_path / "adm.pt", tmp_path / "unet")) == 0
    sched = DDPMScheduler.from_pretrained(tmp_path / "unet")
    assert sched.config.variance_type == "learned_range"
    torch.testing.assert_close(sched.betas[[0, -1]], torch.tensor([1e-4, 2e-2]))


def test_unsupported_options_and_mismatched_flags_are_user_errors(tmp_path, capsys):
    adm, cfg = make_adm("sdft_like")
    state = adm.state_dict()
    with pytest.raises(UserError, match="class-conditional"):
        convert_state_dict(state, ADMConfig(**{**cfg.__dict__, "class_cond": True}))
    with pytest.raises(UserError, match="class-conditional"):
        convert_state_dict({**state, "label_emb.weight": torch.zeros(10, 128)}, cfg)
    with pytest.raises(UserError, match="channel_mult must start with 1"):
        convert_state_dict(state, ADMConfig(**{**cfg.__dict__, "channel_mult": (0.5, 1, 2)}))
    with pytest.raises(UserError, match="has no 'input_blocks"):  # checkpoint has 1 res block, flags say 2
        convert_state_dict(state, ADMConfig(**{**cfg.__dict__, "num_res_blocks": 2}))
    with pytest.raises(UserError, match="not converted"):  # extra tensors the flags do not describe
        convert_state_dict({**state, "extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(UserError, match="attention head sizes"):  # 2 heads of 32 and of 64 channels
        convert_state_dict(
            state,
            ADMConfig(**{**cfg.__dict__, "num_head_channels": -1, "num_heads": 2, "attention_resolutions": (16, 8)}),
        )

    # Through the CLI: a one-line error and exit status 2, for a wrong output-channel flag and a missing file.
    torch.save(state, tmp_path / "adm.pt")
    args = _cli_args(cfg, tmp_path / "adm.pt", tmp_path / "unet")
    assert main([*args, "--learn-sigma", "False"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--learn-sigma" in err and err.count("\n") == 1
    assert not (tmp_path / "unet").exists()  # nothing half-written
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "ADM checkpoint not found" in capsys.readouterr().err
