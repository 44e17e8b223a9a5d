"""Convert an ADM (openai/guided-diffusion ``UNetModel``) checkpoint into a diffusers ``UNet2DModel``.

Target: the "light" FFHQ-256 ADM that SDFT fine-tunes (``ffhq_p2.pt`` from P2-weighting, loaded by
JiwanHur/SDFT as ``--dist_checkpoint``). Its flags, from SDFT's README and ``train_ddp_distill.sh``, are the
defaults of :class:`ADMConfig`: image 256, 128 channels, channel_mult (1,1,2,2,4,4), 1 res block per level,
attention at 16x16 with 64 channels per head, learned sigma (6 output channels), scale-shift norm, residual
up/down-sampling, legacy attention order, linear 1000-step schedule, dropout 0.1 (training only).

Why this maps exactly: both networks are the same computation, only named differently.

- ``time_embed.{0,2}`` -> ``time_embedding.linear_{1,2}``; ADM's ``timestep_embedding`` is ``[cos, sin]`` with
  frequencies ``exp(-ln(1e4) i / half)``, i.e. diffusers' ``Timesteps`` with ``flip_sin_to_cos=True`` and
  ``freq_shift=0`` (only valid when ``channel_mult[0] == 1``, because diffusers embeds with
  ``block_out_channels[0]`` channels where ADM uses ``model_channels``).
- ``input_blocks`` level by level -> ``down_blocks[i].resnets/attentions/downsamplers``; ``middle_block``
  -> ``mid_block``; ``output_blocks`` (``num_res_blocks + 1`` per level) -> ``up_blocks``; ``out.{0,2}`` ->
  ``conv_norm_out``/``conv_out``. Skip connections are pushed and popped in the same order on both sides.
- ResBlock ``in_layers.{0,2}``/``emb_layers.1``/``out_layers.{0,3}``/``skip_connection`` ->
  ``norm1``/``conv1``/``time_emb_proj``/``norm2``/``conv2``/``conv_shortcut``; scale-shift norm is diffusers'
  ``resnet_time_scale_shift="scale_shift"``, and ``resblock_updown`` is ``downsample_type="resnet"``.
- AttentionBlock: ``norm`` -> ``group_norm``; the 1x1 ``qkv`` Conv1d is split into ``to_q/to_k/to_v`` linears.
  ``QKVAttentionLegacy`` (default) lays channels out per head as ``[q_h, k_h, v_h]``; ``QKVAttention``
  (``use_new_attention_order``) as ``[q_all_heads, k_all_heads, v_all_heads]``. ``proj_out`` -> ``to_out.0``.
  ADM's scale ``1/sqrt(sqrt(d))`` on q and k equals diffusers' ``1/sqrt(d)``.

Every source tensor must be consumed and every target tensor filled; otherwise a :class:`UserError` names the
first offending keys, which usually means a flag does not match the checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import load_weights

# guided-diffusion's create_model() defaults when --channel_mult is empty.
ADM_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


@dataclass(frozen=True)
class ADMConfig:
    """The guided-diffusion model flags that shape the network (defaults: SDFT's FFHQ-256 source model)."""

    image_size: int = 256
    in_channels: int = 3
    num_channels: int = 128
    num_res_blocks: int = 1
    channel_mult: tuple[float, ...] | None = None  # None: guided-diffusion's default for image_size
    attention_resolutions: tuple[int, ...] = (16,)  # resolutions in pixels, as on the ADM command line
    num_heads: int = 4
    num_head_channels: int = 64  # -1: use num_heads instead
    num_heads_upsample: int = -1  # -1: same as num_heads
    learn_sigma: bool = True
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    class_cond: bool = False
    dropout: float = 0.1
    norm_num_groups: int = 32  # ADM's GroupNorm32 always uses 32; smaller only for tiny test models
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"

    @property
    def mults(self) -> tuple[float, ...]:
        if self.channel_mult:
            return tuple(self.channel_mult)
        if self.image_size not in ADM_DEFAULT_CHANNEL_MULT:
            raise UserError(
                f"no default channel_mult for image_size {self.image_size}: pass --channel-mult (e.g. 1,1,2,2,4,4)"
            )
        return ADM_DEFAULT_CHANNEL_MULT[self.image_size]

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(m * self.num_channels) for m in self.mults)

    def has_attention(self, level: int) -> bool:
        """ADM puts attention where the downsampling rate ``2**level`` is in ``image_size // res``."""
        return 2**level in {self.image_size // r for r in self.attention_resolutions}

    def head_dim(self, channels: int, upsample: bool = False) -> int:
        if self.num_head_channels != -1:
            return self.num_head_channels
        heads = self.num_heads_upsample if upsample and self.num_heads_upsample != -1 else self.num_heads
        return channels // heads


def validate(cfg: ADMConfig) -> int:
    """Reject ADM options diffusers' ``UNet2DModel`` cannot express; return the common attention head size."""
    if cfg.class_cond:
        raise UserError("class-conditional ADM checkpoints are not supported: convert an unconditional model")
    mults = cfg.mults
    if mults[0] != 1:
        raise UserError(f"channel_mult must start with 1 (got {mults}): diffusers embeds timesteps at that width")
    if any(m * cfg.num_channels != int(m * cfg.num_channels) for m in mults):
        raise UserError(f"channel_mult {mults} times num_channels {cfg.num_channels} must give whole channels")
    for w in cfg.widths:
        if w % cfg.norm_num_groups:
            raise UserError(f"{w} channels are not divisible into {cfg.norm_num_groups} GroupNorm groups")
    if cfg.noise_schedule not in ("linear", "cosine"):
        raise UserError(f"noise_schedule must be 'linear' or 'cosine', got '{cfg.noise_schedule}'")
    attn = [(w, up) for lvl, w in enumerate(cfg.widths) if cfg.has_attention(lvl) for up in (False, True)]
    attn.append((cfg.widths[-1], False))  # the middle block always has attention
    dims = {cfg.head_dim(w, up) for w, up in attn}
    if len(dims) != 1 or any(w % d for d in dims for w, _ in attn):
        raise UserError(
            f"attention head sizes {sorted(dims)} differ between layers: diffusers UNet2DModel needs one "
            "attention_head_dim; set --num-head-channels to the checkpoint's head size"
        )
    return dims.pop()


def unet2d_config(cfg: ADMConfig) -> dict:
    """Keyword arguments of the diffusers ``UNet2DModel`` that computes the same function as the ADM."""
    head_dim = validate(cfg)
    resample = "resnet" if cfg.resblock_updown else "conv"
    n = len(cfg.mults)
    plain_down = "ResnetDownsampleBlock2D" if cfg.resblock_updown else "DownBlock2D"
    plain_up = "ResnetUpsampleBlock2D" if cfg.resblock_updown else "UpBlock2D"
    down = [("AttnDownBlock2D" if cfg.has_attention(lvl) else plain_down) for lvl in range(n)]
    up = [("AttnUpBlock2D" if cfg.has_attention(lvl) else plain_up) for lvl in reversed(range(n))]
    return dict(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels * (2 if cfg.learn_sigma else 1),
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=cfg.widths,
        layers_per_block=cfg.num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=1,
        downsample_type=resample,
        upsample_type=resample,
        dropout=cfg.dropout,
        act_fn="silu",
        attention_head_dim=head_dim,
        norm_num_groups=cfg.norm_num_groups,
        attn_norm_num_groups=cfg.norm_num_groups,  # else diffusers drops the mid attention's GroupNorm
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        add_attention=True,
        num_train_timesteps=cfg.diffusion_steps,
    )


def scheduler_config(cfg: ADMConfig) -> dict:
    """A diffusers ``DDPMScheduler`` config equal to the ADM training diffusion (for ``from_pretrained``)."""
    scale = 1000 / cfg.diffusion_steps  # guided-diffusion rescales the linear betas for other step counts
    return dict(
        _class_name="DDPMScheduler",
        num_train_timesteps=cfg.diffusion_steps,
        beta_schedule="linear" if cfg.noise_schedule == "linear" else "squaredcos_cap_v2",
        beta_start=scale * 1e-4,
        beta_end=scale * 2e-2,
        variance_type="learned_range" if cfg.learn_sigma else "fixed_small",
        prediction_type="epsilon",
        clip_sample=True,
    )


# (ADM suffix, diffusers suffix) of the sub-modules whose weight/bias are copied unchanged.
_RESNET = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
)


def module_pairs(cfg: ADMConfig) -> Iterator[tuple[str, str, str]]:
    """Walk both architectures in step: yields ``(kind, adm_prefix, diffusers_prefix)``.

    ``kind`` is ``plain`` (copy), ``resnet`` or ``attn``. The walk mirrors guided-diffusion's
    ``UNetModel.__init__`` so block indices line up with ``input_blocks.N``/``output_blocks.N``.
    """
    yield "plain", "time_embed.0", "time_embedding.linear_1"
    yield "plain", "time_embed.2", "time_embedding.linear_2"
    yield "plain", "input_blocks.0.0", "conv_in"
    idx, n = 1, len(cfg.mults)
    for lvl in range(n):
        for r in range(cfg.num_res_blocks):
            yield "resnet", f"input_blocks.{idx}.0", f"down_blocks.{lvl}.resnets.{r}"
            if cfg.has_attention(lvl):
                yield "attn", f"input_blocks.{idx}.1", f"down_blocks.{lvl}.attentions.{r}"
            idx += 1
        if lvl != n - 1:
            if cfg.resblock_updown:
                yield "resnet", f"input_blocks.{idx}.0", f"down_blocks.{lvl}.downsamplers.0"
            else:
                yield "plain", f"input_blocks.{idx}.0.op", f"down_blocks.{lvl}.downsamplers.0.conv"
            idx += 1
    yield "resnet", "middle_block.0", "mid_block.resnets.0"
    yield "attn", "middle_block.1", "mid_block.attentions.0"
    yield "resnet", "middle_block.2", "mid_block.resnets.1"
    idx = 0
    for i, lvl in enumerate(reversed(range(n))):
        for r in range(cfg.num_res_blocks + 1):
            yield "resnet", f"output_blocks.{idx}.0", f"up_blocks.{i}.resnets.{r}"
            sub = 1
            if cfg.has_attention(lvl):
                yield "attn", f"output_blocks.{idx}.1", f"up_blocks.{i}.attentions.{r}"
                sub = 2
            if lvl and r == cfg.num_res_blocks:
                if cfg.resblock_updown:
                    yield "resnet", f"output_blocks.{idx}.{sub}", f"up_blocks.{i}.upsamplers.0"
                else:
                    yield "plain", f"output_blocks.{idx}.{sub}.conv", f"up_blocks.{i}.upsamplers.0.conv"
            idx += 1
    yield "plain", "out.0", "conv_norm_out"
    yield "plain", "out.2", "conv_out"


class _Source:
    """The ADM state_dict, consumed key by key so leftovers can be reported."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.left = {k: v for k, v in state.items()}

    def take(self, key: str) -> torch.Tensor:
        if key not in self.left:
            raise UserError(
                f"ADM checkpoint has no '{key}': the model flags (channels, res blocks, attention "
                "resolutions, resblock_updown, ...) do not match this checkpoint"
            )
        return self.left.pop(key).float()

    def has(self, key: str) -> bool:
        return key in self.left


def _split_qkv(qkv: torch.Tensor, heads: int, new_order: bool) -> tuple[torch.Tensor, ...]:
    """Split ADM's fused qkv rows (3C, ...) into q, k, v rows (C, ...), each ordered head by head."""
    per_head = qkv.shape[0] // (3 * heads)
    rest = qkv.shape[1:]
    if new_order:  # QKVAttention: [q(all heads) | k | v]
        parts = qkv.reshape(3, heads, per_head, *rest).unbind(0)
    else:  # QKVAttentionLegacy: [q_0 k_0 v_0 | q_1 k_1 v_1 | ...]
        parts = qkv.reshape(heads, 3, per_head, *rest).unbind(1)
    return tuple(p.reshape(heads * per_head, *rest) for p in parts)


def convert_state_dict(state: Mapping[str, torch.Tensor], cfg: ADMConfig) -> dict[str, torch.Tensor]:
    """ADM ``UNetModel`` state_dict -> diffusers ``UNet2DModel`` state_dict (float32)."""
    head_dim = validate(cfg)
    if any(k.startswith("label_emb") for k in state):
        raise UserError("this ADM checkpoint is class-conditional (has label_emb): only unconditional is supported")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    src, out = _Source(state), {}
    for kind, a, d in module_pairs(cfg):
        if kind == "plain":
            pairs = [(a, d)]
        elif kind == "resnet":
            pairs = [(f"{a}.{x}", f"{d}.{y}") for x, y in _RESNET]
            if src.has(f"{a}.skip_connection.weight"):  # only where the block changes width
                pairs.append((f"{a}.skip_connection", f"{d}.conv_shortcut"))
        else:
            pairs = [(f"{a}.norm", f"{d}.group_norm")]
            for p in ("weight", "bias"):
                qkv = src.take(f"{a}.qkv.{p}")
                q, k, v = _split_qkv(qkv, qkv.shape[0] // 3 // head_dim, cfg.use_new_attention_order)
                for name, t in zip(("to_q", "to_k", "to_v"), (q, k, v)):
                    out[f"{d}.{name}.{p}"] = t.reshape(t.shape[0], -1) if p == "weight" else t
                proj = src.take(f"{a}.proj_out.{p}")  # Conv1d(k=1) -> Linear
                out[f"{d}.to_out.0.{p}"] = proj.reshape(proj.shape[0], -1) if p == "weight" else proj
        for x, y in pairs:
            for p in ("weight", "bias"):
                out[f"{y}.{p}"] = src.take(f"{x}.{p}")
    if src.left:
        extra = sorted(src.left)
        raise UserError(
            f"{len(extra)} ADM tensors were not converted (e.g. {extra[:3]}): the model flags describe a "
            "smaller network than this checkpoint (check --num-res-blocks, --channel-mult, "
            "--attention-resolutions)"
        )
    return out


def build_unet(cfg: ADMConfig, state: Mapping[str, torch.Tensor]):
    """A diffusers ``UNet2DModel`` for ``cfg`` holding the converted ADM weights (strictly loaded)."""
    from diffusers import UNet2DModel

    converted = convert_state_dict(state, cfg)
    unet = UNet2DModel(**unet2d_config(cfg))
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(converted))
    wrong = [k for k in expected if k in converted and converted[k].shape != expected[k].shape]
    if missing or wrong:
        bad = (missing or wrong)[0]
        got = tuple(converted[bad].shape) if bad in converted else "nothing"
        hint = " (6 output channels means --learn-sigma)" if bad.startswith("conv_out") else ""
        raise UserError(
            f"ADM checkpoint does not fit the model flags: '{bad}' expects {tuple(expected[bad].shape)}, "
            f"got {got}{hint}; {len(missing)} missing and {len(wrong)} mis-shaped tensors in total"
        )
    unet.load_state_dict(converted, strict=True)
    return unet.eval()


def convert_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, cfg: ADMConfig, overwrite: bool = False
):
    """Read an ADM ``.pt``, convert it and write a diffusers folder (safetensors + config + scheduler).

    The folder is written to a temporary sibling and renamed into place, so an interrupted conversion never
    leaves a half-written model that ``from_pretrained`` would later load.
    """
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"output folder '{out_dir}' is not empty: choose a new --out or pass --overwrite")
    if not Path(checkpoint).expanduser().is_file():
        raise UserError(
            f"ADM checkpoint not found: '{checkpoint}' (pass --checkpoint the guided-diffusion .pt, e.g. "
            "ffhq_p2.pt from jychoi118/P2-weighting for SDFT)"
        )
    state = load_weights(checkpoint, "ADM (guided-diffusion) checkpoint")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    unet = build_unet(cfg, state)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        unet.save_pretrained(tmp, safe_serialization=True)
        with open(tmp / "scheduler_config.json", "w") as f:
            json.dump(scheduler_config(cfg), f, indent=2)
        with open(tmp / "adm_flags.json", "w") as f:  # provenance: the flags the conversion assumed
            json.dump({**asdict(cfg), "channel_mult": list(cfg.mults), "source": str(checkpoint)}, f, indent=2)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return unet
