"""StyleGAN2 generator: rosinality layout, hand-checked ops, checkpoint loading and the W+ interface."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from safetensors.torch import save_file

from diffedit_lab.models.stylegan2 import (
    EqualLinear,
    ModulatedConv2d,
    StyleGAN2Generator,
    build_generator,
    fused_leaky_relu,
    make_kernel,
    save_rosinality_checkpoint,
    upfirdn2d,
)
from diffedit_lab.testing.stylegan2 import tiny_generator
from diffedit_lab.utils.errors import UserError

STYLE_DIM = 32


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convs are dominated by threading overhead on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(size: int = 32, seed: int = 0, **kw) -> StyleGAN2Generator:
    return tiny_generator(size, style_dim=STYLE_DIM, n_mlp=2, seed=seed, **kw)


# ------------------------------------------------------------------------------------------- ops


def test_equal_linear_scales_weight_and_bias_at_run_time():
    layer = EqualLinear(2, 2, lr_mul=0.5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.bias.copy_(torch.tensor([1.0, -1.0]))
    s = 0.5 / math.sqrt(2)  # lr_mul / sqrt(fan_in)
    expected = torch.tensor([[3 * s + 0.5, 7 * s - 0.5]])  # x=[1,1]: row sums * s + bias * lr_mul
    torch.testing.assert_close(layer(torch.ones(1, 2)), expected)
    layer.activation = "fused_lrelu"  # positive values: leaky ReLU is identity, then * sqrt(2)
    torch.testing.assert_close(layer(torch.ones(1, 2)), expected * math.sqrt(2))


def test_equal_linear_stores_weights_divided_by_lr_mul():
    torch.manual_seed(0)
    layer = EqualLinear(256, 256, lr_mul=0.01)
    assert layer.weight.std().item() == pytest.approx(100.0, rel=0.05)


def test_fused_leaky_relu_hand_values():
    x = torch.tensor([[-1.0, 2.0]]).view(1, 2, 1, 1)
    out = fused_leaky_relu(x, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out.flatten(), torch.tensor([-0.2 * math.sqrt(2), 3 * math.sqrt(2)]))


def test_make_kernel_is_normalised_outer_product():
    expected = torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1])[None, :] / 64
    torch.testing.assert_close(make_kernel([1, 3, 3, 1]), expected)


def test_upfirdn2d_blur_of_impulse_is_the_kernel():
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 2] = 1.0
    out = upfirdn2d(x, make_kernel([1, 3, 3, 1]), pad=(2, 1))
    expected = torch.zeros(6, 6)
    expected[1:5, 1:5] = torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1]) / 64
    torch.testing.assert_close(out[0, 0], expected)


def test_upfirdn2d_is_a_true_convolution_not_a_correlation():
    """An impulse response reproduces an asymmetric kernel unrotated."""
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    k = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = upfirdn2d(x, k, pad=(1, 1))
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(out[0, 0, 1:3, 1:3], k)
    assert out.abs().sum() == pytest.approx(10.0)


def test_upfirdn2d_upsample_zero_inserts_then_filters_and_keeps_dc():
    x = torch.tensor([[[[1.0, 2.0]]]])  # 1x2
    out = upfirdn2d(x, torch.tensor([[1.0, 1.0]]), up=2, pad=(0, 0))
    # zero insertion gives [[1,0,2,0],[0,0,0,0]]; a 1x2 box filter sums neighbours along width -> 2x3
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    const = upfirdn2d(torch.ones(1, 1, 6, 6), make_kernel([1, 3, 3, 1]) * 4, up=2, pad=(2, 1))
    assert const.shape[-2:] == (12, 12)
    torch.testing.assert_close(const[0, 0, 2:-2, 2:-2], torch.ones(8, 8))


def test_upfirdn2d_down_and_negative_pad():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    one = torch.ones(1, 1)
    torch.testing.assert_close(upfirdn2d(x, one, down=2), x[:, :, ::2, ::2])
    torch.testing.assert_close(upfirdn2d(x, one, pad=(-1, -1)), x[:, :, 1:3, 1:3])


def test_modulated_conv_demodulates_to_unit_norm_weights():
    conv = ModulatedConv2d(2, 1, 1, style_dim=4)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, 4.0]).view(1, 1, 2, 1, 1))
        conv.modulation.weight.zero_()
        conv.modulation.bias.copy_(torch.tensor([2.0, 1.0]))  # style s = (2, 1) for every w
    out = conv(torch.ones(1, 2, 1, 1), torch.randn(1, 4))
    # effective weight (3*2, 4*1) = (6, 4); demodulation divides by its norm sqrt(52)
    assert out.item() == pytest.approx(10 / math.sqrt(52), rel=1e-5)
    conv.demodulate = False
    assert conv(torch.ones(1, 2, 1, 1), torch.randn(1, 4)).item() == pytest.approx(10 / math.sqrt(2), rel=1e-5)


def test_modulated_conv_upsample_doubles_resolution():
    conv = ModulatedConv2d(4, 5, 3, style_dim=4, upsample=True)
    assert conv(torch.randn(2, 4, 5, 5), torch.randn(2, 4)).shape == (2, 5, 10, 10)


def _literal_upfirdn2d(x, kernel, up, pad):
    """Zero insertion by indexing, explicit padding, depthwise convolution with the flipped kernel."""
    b, c, h, w = x.shape
    u = x.new_zeros(b, c, h * up, w * up)
    u[:, :, ::up, ::up] = x
    u = torch.nn.functional.pad(u, (pad[0], pad[1], pad[0], pad[1]))
    k = torch.flip(kernel, [0, 1]).expand(c, 1, *kernel.shape)
    return torch.nn.functional.conv2d(u, k, groups=c)


@pytest.mark.parametrize(("up", "pad"), [(2, (2, 1)), (1, (1, 1)), (1, (2, 1)), (2, (1, 1))])
def test_upfirdn2d_fast_paths_equal_the_literal_definition(up, pad):
    g = torch.Generator().manual_seed(0)
    x, kernel = torch.randn(2, 3, 5, 6, generator=g), torch.rand(4, 4, generator=g)  # asymmetric kernel
    torch.testing.assert_close(upfirdn2d(x, kernel, up=up, pad=pad), _literal_upfirdn2d(x, kernel, up, pad))


@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_is_the_per_sample_kernel_convolution(upsample):
    """The grouped batch convolution equals convolving each sample with its own kernel gain·W·s·d, + bias."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, style_dim=6, upsample=upsample)
    x, style, bias, gain = torch.randn(2, 4, 6, 6), torch.randn(2, 6), torch.randn(5), 1.7
    out = conv(x, style, gain=gain, bias=bias)
    for b in range(2):
        s = style[b : b + 1] @ (conv.modulation.weight * conv.modulation.scale).T + conv.modulation.bias
        w = conv.scale * conv.weight[0] * s.view(1, 4, 1, 1)  # (out, in, 3, 3)
        w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8) * gain
        if upsample:
            y = torch.nn.functional.conv_transpose2d(x[b : b + 1], w.transpose(0, 1), stride=2)
            y = _literal_upfirdn2d(y, make_kernel([1, 3, 3, 1]) * 4, 1, (1, 1))
        else:
            y = torch.nn.functional.conv2d(x[b : b + 1], w, padding=1)
        torch.testing.assert_close(out[b : b + 1], y + bias.view(1, -1, 1, 1), atol=1e-5, rtol=1e-5)


def test_styled_conv_folds_gain_and_bias_into_the_kernel():
    from diffedit_lab.models.stylegan2.ops import StyledConv

    torch.manual_seed(0)
    layer = StyledConv(4, 5, 3, style_dim=6)
    with torch.no_grad():
        layer.noise.weight.fill_(0.3)
        layer.activate.bias.copy_(torch.randn(5))
    x, style, noise = torch.randn(2, 4, 6, 6), torch.randn(2, 6), torch.randn(2, 1, 6, 6)
    plain = layer.conv(x, style)  # no gain, no bias
    expected = fused_leaky_relu(plain + 0.3 * noise, layer.activate.bias)  # lrelu(· + b)·√2
    torch.testing.assert_close(layer(x, style, noise=noise), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x, style, noise=0.0), fused_leaky_relu(plain, layer.activate.bias), atol=1e-5,
                               rtol=1e-5)  # fmt: skip


# ------------------------------------------------------------------------------------ generator


@pytest.mark.parametrize(("size", "n_latent"), [(4, 2), (32, 8), (64, 10), (256, 14), (1024, 18)])
def test_n_latent_is_two_per_resolution_minus_two(size, n_latent):
    gen = StyleGAN2Generator(size, style_dim=8, n_mlp=1, channels={2**i: 2 for i in range(2, 11)})
    assert gen.n_latent == n_latent == 2 * int(math.log2(size)) - 2
    assert gen.num_layers == 2 * int(math.log2(size)) - 3


@pytest.mark.parametrize("size", [32, 64])
def test_tiny_generator_shapes(size):
    gen = tiny(size)
    w = gen.sample_wplus([0, 1, 2])
    assert w.shape == (3, gen.n_latent, STYLE_DIM)
    img = gen(w)
    assert img.shape == (3, 3, size, size)
    assert torch.isfinite(img).all()
    assert not torch.allclose(img[0], img[1])  # different codes, different images


def test_state_dict_uses_rosinality_names():
    gen = StyleGAN2Generator(8, style_dim=4, n_mlp=2, channels={4: 2, 8: 2})
    styled = [
        "conv.weight",
        "conv.modulation.weight",
        "conv.modulation.bias",
        "noise.weight",
        "activate.bias",
    ]
    rgb = ["bias", "conv.weight", "conv.modulation.weight", "conv.modulation.bias"]
    expected = {"style.1.weight", "style.1.bias", "style.2.weight", "style.2.bias", "input.input"}
    expected |= {f"conv1.{k}" for k in styled} | {f"to_rgb1.{k}" for k in rgb}
    expected |= {f"convs.0.{k}" for k in styled} | {"convs.0.conv.blur.kernel"}
    expected |= {f"convs.1.{k}" for k in styled}
    expected |= {f"to_rgbs.0.{k}" for k in rgb} | {"to_rgbs.0.upsample.kernel"}
    expected |= {"noises.noise_0", "noises.noise_1", "noises.noise_2"}
    sd = gen.state_dict()
    assert set(sd) == expected
    assert sd["noises.noise_0"].shape == (1, 1, 4, 4) and sd["noises.noise_2"].shape == (1, 1, 8, 8)
    assert sd["convs.0.conv.weight"].shape == (1, 2, 2, 3, 3)
    assert sd["to_rgb1.bias"].shape == (1, 3, 1, 1)


def test_default_channels_are_config_f():
    gen = StyleGAN2Generator(8, style_dim=4, n_mlp=1)
    assert gen.channels[1024] == 32 and gen.channels[64] == 512 and gen.channels[4] == 512


def test_noise_modes():
    gen = tiny()
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    w = gen.sample_wplus([3])
    torch.testing.assert_close(gen(w, noise_mode="const"), gen(w, noise_mode="const"), rtol=0, atol=0)
    assert not torch.allclose(gen(w, noise_mode="random"), gen(w, noise_mode="const"))
    zeros = [torch.zeros_like(getattr(gen.noises, f"noise_{i}")) for i in range(gen.num_layers)]
    torch.testing.assert_close(gen(w, noise_mode="none"), gen(w, noise=zeros))
    with pytest.raises(UserError, match="noise_mode"):
        gen(w, noise_mode="fixed")


def test_w_broadcasts_to_wplus_and_bad_shape_fails():
    gen = tiny()
    w = gen.mapping(torch.randn(2, STYLE_DIM))
    torch.testing.assert_close(gen(w), gen(w.unsqueeze(1).repeat(1, gen.n_latent, 1)))
    with pytest.raises(ValueError, match="W\\+"):
        gen(torch.zeros(2, gen.n_latent + 1, STYLE_DIM))


def test_gradients_reach_wplus_of_a_frozen_generator():
    gen = tiny().requires_grad_(False)
    w = gen.sample_wplus([0, 1]).requires_grad_(True)
    gen(w).square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert (w.grad.abs().sum(dim=2) > 0).all()  # every layer's style influences the image
    assert all(p.grad is None for p in gen.parameters())


def test_truncation_zero_returns_the_truncation_latent():
    gen = tiny()
    anchor = torch.randn(1, STYLE_DIM)
    w = gen.sample_wplus([0, 1], truncation=0.0, truncation_latent=anchor)
    torch.testing.assert_close(w, anchor.expand(2, gen.n_latent, -1))
    half = gen.sample_wplus([0], truncation=0.5, truncation_latent=anchor)
    full = gen.sample_wplus([0])
    torch.testing.assert_close(half, 0.5 * anchor + 0.5 * full)
    gen.latent_avg = torch.full((1, STYLE_DIM), 0.25)  # default anchor: the checkpoint's latent_avg
    torch.testing.assert_close(gen.sample_wplus([5], truncation=0.0), torch.full((1, gen.n_latent, STYLE_DIM), 0.25))


def test_seeds_are_reproducible_and_match_explicit_z():
    gen = tiny()
    z = torch.randn(STYLE_DIM, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(gen.sample_wplus([11]), gen.sample_wplus(z[None]))


def test_mean_latent_is_the_average_mapped_z():
    gen = tiny()
    z = torch.randn(64, STYLE_DIM, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gen.mean_latent(64), gen.mapping(z).mean(0, keepdim=True))


def test_crop_removes_borders():
    full, cropped = tiny(), tiny(crop=(8, 8, 0, 4))
    w = full.sample_wplus([1])
    assert cropped.output_size == (16, 28)
    torch.testing.assert_close(cropped(w), full(w)[:, :, 8:24, 0:28])
    with pytest.raises(UserError, match="crop"):
        tiny(crop=(16, 16, 0, 0))


def test_tiny_generator_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.randn(1)
    torch.manual_seed(123)
    a, b, c = tiny(seed=0), tiny(seed=0), tiny(seed=1)
    assert torch.equal(torch.randn(1), before)
    torch.testing.assert_close(a.input.input, b.input.input, rtol=0, atol=0)
    assert not torch.allclose(a.input.input, c.input.input)


def test_bad_size_is_a_user_error():
    with pytest.raises(UserError, match="power of two"):
        StyleGAN2Generator(48, style_dim=8, n_mlp=1)


# ---------------------------------------------------------------------------------- checkpoints


def test_rosinality_checkpoint_round_trip(tmp_path):
    gen = tiny(seed=3)
    path = tmp_path / "stylegan2-tiny.pt"
    save_rosinality_checkpoint(gen, path)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"g_ema", "latent_avg"} and ckpt["latent_avg"].shape == (STYLE_DIM,)
    loaded = tiny_generator(32, style_dim=STYLE_DIM, n_mlp=2, checkpoint=str(path))
    w = gen.sample_wplus([0, 1])
    torch.testing.assert_close(loaded(w), gen(w), rtol=0, atol=0)
    torch.testing.assert_close(loaded.latent_avg, ckpt["latent_avg"][None])


def test_training_checkpoint_with_argparse_args_and_bare_state_dicts(tmp_path):
    gen = tiny(seed=4)
    w = gen.sample_wplus([0])
    sd = gen.state_dict()
    train = tmp_path / "train.pt"  # rosinality train.py: g, d, g_ema, optimiser states, argparse args
    torch.save({"g": sd, "d": {}, "g_ema": sd, "args": argparse.Namespace(size=32), "ada_aug_p": 0.0}, train)
    bare = tmp_path / "bare.pt"
    torch.save({k: v for k, v in sd.items() if not k.endswith(".kernel")}, bare)  # fixed filters rebuilt
    st = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    for path in (train, bare, st):
        loaded = StyleGAN2Generator.from_checkpoint(path, 32, style_dim=STYLE_DIM, n_mlp=2, channels=gen.channels)
        torch.testing.assert_close(loaded(w), gen(w), rtol=0, atol=0)
        assert loaded.latent_avg is None


def test_wrong_architecture_is_one_line_user_error(tmp_path):
    path = tmp_path / "g.pt"
    save_rosinality_checkpoint(tiny(32), path)
    with pytest.raises(UserError) as err:
        tiny_generator(64, style_dim=STYLE_DIM, n_mlp=2, checkpoint=str(path))
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "size=64" in msg and "convs.6" in msg
    with pytest.raises(UserError, match="shape mismatch"):
        build_generator(str(path), 32, style_dim=STYLE_DIM, n_mlp=2)


def test_missing_file_and_wrong_key_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_generator(str(tmp_path / "nope.pt"), 32, style_dim=STYLE_DIM, n_mlp=2)
    path = tmp_path / "other.pt"
    torch.save({"model": {"a": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match="no 'g_ema' entry"):
        build_generator(str(path), 32, style_dim=STYLE_DIM, n_mlp=2)


def test_build_generator_needs_a_checkpoint_and_takes_a_channel_table(tmp_path):
    with pytest.raises(UserError, match="generator.checkpoint is not set"):
        build_generator(None, 32, style_dim=STYLE_DIM, n_mlp=2)
    gen = tiny(seed=5)
    path = tmp_path / "g.pt"
    save_rosinality_checkpoint(gen, path)
    loaded = build_generator(str(path), 32, style_dim=STYLE_DIM, n_mlp=2, channels=gen.channels)
    assert not loaded.training
    w = gen.sample_wplus([0])
    torch.testing.assert_close(loaded(w), gen(w), rtol=0, atol=0)
