"""The Rectifier hypernetwork: separable offsets (shapes, parameter counts against hand values), Δ = 0 at init
(rectified model = base model), gradients reaching the heads but never the frozen U-Net, the encoder being
torchvision's ResNet-34, and the layer selection."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.methods.rectifier.rectified import base_kernels, rectified_eps
from diffedit_lab.models.rectifier import LayerSpec, RectifierNet, modulate, select_layers
from diffedit_lab.models.rectifier.encoder import ResNetEncoder
from diffedit_lab.models.rectifier.network import Subnet
from diffedit_lab.testing.priors import tiny_unet_prior
from diffedit_lab.testing.rectifier import tiny_rectifier
from diffedit_lab.utils.errors import UserError


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_layer_spec_counts_generated_numbers_separably():
    spec = LayerSpec("up_blocks.0.resnets.0.conv1", out_channels=4, in_channels=3, kernel=(3, 3))
    assert spec.shape == (4, 3, 3, 3)
    assert spec.generated == 9 * 3 + 9 * 4 == 63  # kh·kw·C_in + kh·kw·C_out, not kh·kw·C_in·C_out = 108


def test_subnet_parameter_count_matches_hand_values():
    spec = LayerSpec("l", out_channels=4, in_channels=3, kernel=(3, 3))
    # encoder width 16, subnet width 8, time embedding 16, a 1×1 feature map: no strided conv
    sub = Subnet(spec, in_channels=16, channels=8, time_dim=16, feature_size=1)
    conv_in, time_proj = 16 * 8 * 9 + 8, 16 * 8 + 8
    head_in, head_out = 8 * 27 + 27, 8 * 36 + 36
    assert n_params(sub) == conv_in + time_proj + head_in + head_out == 1863
    # an 8×8 map (256 px input) adds three stride-2 3×3 convs 8 → 8
    assert len(Subnet(spec, 16, 8, 16, feature_size=8).down) == 3
    assert n_params(Subnet(spec, 16, 8, 16, feature_size=8)) == 1863 + 3 * (8 * 8 * 9 + 8)


def test_offset_is_a_per_position_outer_product_and_zero_at_init():
    spec = LayerSpec("l", out_channels=5, in_channels=3, kernel=(3, 3))
    sub = Subnet(spec, 16, 8, 16, 1)
    feats, temb = torch.randn(2, 16, 1, 1), torch.randn(2, 16)
    delta = sub(feats, temb)
    assert delta.shape == (2, 5, 3, 3, 3)
    assert torch.equal(delta, torch.zeros_like(delta))  # zero-initialised b head
    torch.nn.init.normal_(sub.head_out.weight)
    delta = sub(feats, temb)
    for y in range(3):
        for x in range(3):  # C_out × C_in matrix at each kernel position: rank 1 (= b ⊗ a)
            assert int(torch.linalg.matrix_rank(delta[0, :, :, y, x])) == 1


def test_select_layers_defaults_to_mid_and_up_block_convs():
    unet = tiny_unet_prior().unet
    names = [s.name for s in select_layers(unet)]
    assert names and all(n.startswith(("mid_block.", "up_blocks.")) for n in names)
    assert "up_blocks.0.upsamplers.0.conv" in names and "mid_block.resnets.0.conv1" in names
    assert "conv_in" not in names and not any(n.startswith("down_blocks") for n in names)
    assert [s.name for s in select_layers(unet, ["mid_block.resnets.0.conv1"])] == ["mid_block.resnets.0.conv1"]
    with pytest.raises(UserError, match="matches no convolution"):
        select_layers(unet, ["decoder.*"])


def test_encoder_defaults_are_torchvision_resnet34_with_a_6_channel_stem(tmp_path):
    from torchvision.models import resnet34

    enc = ResNetEncoder()
    tv = resnet34()
    fc = 512 * 1000 + 1000
    assert n_params(enc) == n_params(tv) - fc + 64 * 3 * 7 * 7 == 21_294_080
    assert enc(torch.zeros(1, 6, 64, 64)).shape == (1, 512, 2, 2) and ResNetEncoder.feature_size(256) == 8
    path = tmp_path / "resnet34.pth"
    torch.save(tv.state_dict(), path)
    enc.load_imagenet(path)
    stem = tv.conv1.weight
    assert torch.equal(enc.conv1.weight, torch.cat([stem, stem], 1) * 0.5)
    assert torch.equal(enc.layer4[2].conv2.weight, tv.layer4[2].conv2.weight)
    with pytest.raises(UserError, match="does not fit the encoder"):
        ResNetEncoder(layers=(1, 1, 1, 1)).load_imagenet(path)


def test_modulate_builds_fp32_kernels_and_consumes_the_offsets():
    """θ̂ = θ·(1 + Δ) in float32 even for a half θ (where 1 + Δ would round small Δ away: why base_dtype is fp32
    only), row-major strides also for einsum-born 1×1 kernels, and each Δ popped from the dict it came in."""
    g = torch.Generator().manual_seed(5)
    theta = {"conv": torch.randn(4, 3, 3, 3, generator=g).half(), "short": torch.randn(6, 4, 1, 1, generator=g).half()}

    def outer(k: int, c_in: int, c_out: int) -> torch.Tensor:  # as the Subnet builds Δ (its einsum's strides)
        a = 1e-4 * torch.randn(2, k, k, c_in, generator=g).sign()  # |Δ| = 1e-4 < 2^-12
        return torch.einsum("byxi,byxo->boiyx", a, torch.randn(2, k, k, c_out, generator=g).sign())

    deltas = {"conv": outer(3, 3, 4), "short": outer(1, 4, 6)}
    assert deltas["conv"].stride() != torch.empty(deltas["conv"].shape).stride()
    expected = {k: theta[k].float() * (1 + d) for k, d in deltas.items()}
    out = modulate(theta, deltas)
    assert deltas == {}  # consumed
    assert list(out) == ["conv.weight", "short.weight"]
    for name, w in out.items():
        k = name.removesuffix(".weight")
        assert w.dtype == torch.float32 and w.shape == (2, *theta[k].shape)
        assert torch.equal(w, expected[k]) and (w != theta[k].float()).all()  # every offset survives in fp32
        assert torch.equal(w.half(), theta[k].expand_as(w))  # …and none would in fp16
        assert w.stride() == torch.empty(w.shape).stride()  # row-major
    theta_bf = torch.randn(5, 5, 3, 3, generator=g).bfloat16()
    w = modulate({"c": theta_bf}, {"c": torch.full((1, 5, 5, 3, 3), 1e-3)})["c.weight"]
    assert (w != theta_bf.float()).all() and torch.equal(w.bfloat16()[0], theta_bf)  # bf16 loses |Δ| < 2^-9


@pytest.fixture(scope="module")
def prior():
    return tiny_unet_prior(learned_variance=True)


def _inputs(b: int = 3):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(b, 3, 32, 32, generator=g) * 2 - 1
    eps = torch.randn(b, 3, 32, 32, generator=g)
    return x0, eps, torch.tensor([3, 420, 999])[:b]


@pytest.mark.parametrize("strategy", ["grouped", "vmap"])
def test_rectified_model_equals_the_base_model_at_init(prior, strategy):
    net = tiny_rectifier(prior.unet).eval()
    x0, eps, t = _inputs()
    x_t = prior.add_noise(x0, eps, t)
    deltas = net(x0, x0, t)
    assert all(torch.equal(d, torch.zeros_like(d)) for d in deltas.values())
    kernels = base_kernels(prior.unet, net)
    weights = modulate(kernels, deltas)
    for name, w in weights.items():  # θ·(1 + 0) is θ, bit for bit, for every sample
        assert torch.equal(w, kernels[name.removesuffix(".weight")].expand_as(w))
    with torch.no_grad():
        out = rectified_eps(prior, net, x0, x_t, t, strategy)
        base = prior.predict_eps(x_t, t)
        one = prior.predict_eps(x_t[:1], t[:1], params={k: v[0].detach().clone() for k, v in weights.items()})
        base_one = prior.predict_eps(x_t[:1], t[:1])
    assert torch.equal(out.base_eps, base) and torch.equal(one, base_one)  # same kernels, same numbers
    # the per-sample routes differ from the plain conv only by summation order
    torch.testing.assert_close(out.eps, base, rtol=0, atol=1e-5)


@pytest.mark.parametrize("strategy", ["grouped", "vmap"])
def test_gradients_reach_the_heads_but_never_the_base_unet(prior, strategy):
    net = tiny_rectifier(prior.unet)
    x0, eps, t = _inputs(2)
    out = rectified_eps(prior, net, x0, prior.add_noise(x0, eps, t), t, strategy)
    ((out.eps - eps) ** 2).mean().backward()
    sub = net.subnets[0]
    assert sub.head_out.weight.grad.abs().sum() > 0  # ∂L/∂b = a·∂L/∂Δ ≠ 0
    assert torch.equal(sub.head_in.weight.grad, torch.zeros_like(sub.head_in.weight))  # ∂L/∂a = b·∂L/∂Δ, b = 0
    assert all(p.grad is None and not p.requires_grad for p in prior.unet.parameters())


def test_a_trained_net_changes_the_output_through_every_layer(prior):
    net = tiny_rectifier(prior.unet)
    for sub in net.subnets:
        torch.nn.init.normal_(sub.head_out.weight, std=0.05)
    x0, eps, t = _inputs(2)
    x_t = prior.add_noise(x0, eps, t)
    with torch.no_grad():
        out = rectified_eps(prior, net.eval(), x0, x_t, t)
    assert (out.eps - out.base_eps).abs().max() > 1e-3
    assert isinstance(net, RectifierNet) and net.generated_per_sample == sum(s.generated for s in net.layers)
