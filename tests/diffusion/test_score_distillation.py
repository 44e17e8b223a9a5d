"""Score distillation: the SDS gradient against a hand-computed case, top-k over the batch, gradient injection,
and the full path image → VAE → SDS → autograd on the real tiny Stable Diffusion prior."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diffedit_lab.diffusion.score_distillation import ScoreDistillation, inject_gradient, topk_sparsify
from diffedit_lab.utils.errors import UserError

L, D = 16, 32  # tiny SD text embeddings: 16 tokens of width 32


class FakeUNet(nn.Module):
    """ε̂ = 0.1 + 0.2 · mean(text embedding): 0.1 for the all-zeros (empty) prompt, 0.3 for the all-ones prompt."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # so next(parameters()) gives a dtype
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, t, encoder_hidden_states):
        self.inputs.append(x)
        level = 0.1 + 0.2 * encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=level * torch.ones_like(x))


@pytest.fixture
def fake_prior(sd_prior_copy):
    prior = sd_prior_copy
    prior.unet = FakeUNet()
    prior.encode_text = lambda prompts: torch.stack(
        [torch.ones(L, D) if p else torch.zeros(L, D) for p in ([prompts] if isinstance(prompts, str) else prompts)]
    )
    return prior


# With guidance 100: ε̂_cfg = ε̂_u + 100 (ε̂_c − ε̂_u) = 0.1 + 100 · 0.2 = 20.1
EPS_CFG = 20.1


def _eps(seed=0):
    return torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_sds_gradient_hand_case(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0)
    t = torch.tensor([200, 800])
    latents, eps = _eps(1), _eps(2)
    grad = sds.gradient(latents, t, "a smiling face", eps=eps)
    for i in range(2):
        w = 1.0 - fake_prior.alphas_cumprod[t[i]].item()  # (1 − ᾱ_t), per sample
        torch.testing.assert_close(grad[i], w * (EPS_CFG - eps[i]), atol=1e-4, rtol=1e-5)
    # the UNet saw the noised latents z_t = √ᾱ z + √(1−ᾱ) ε, with uncond and cond stacked
    seen = fake_prior.unet.inputs[-1]
    a = fake_prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(seen, torch.cat([a.sqrt() * latents + (1 - a).sqrt() * eps] * 2))


def test_sds_gradient_constant_weighting(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0, weighting="constant")
    eps = _eps(3)
    grad = sds.gradient(_eps(4), torch.tensor([500, 500]), "a smiling face", eps=eps)
    torch.testing.assert_close(grad, EPS_CFG - eps, atol=1e-4, rtol=1e-5)


def test_sds_guidance_scale_enters_linearly(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=7.5, weighting="constant")
    eps = _eps(3)
    grad = sds.gradient(_eps(4), torch.tensor([10, 10]), "x", eps=eps)
    torch.testing.assert_close(grad, (0.1 + 7.5 * 0.2) - eps, atol=1e-5, rtol=1e-5)


def test_zero_noise_mode(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0, noise="zero")
    t = torch.tensor([300, 300])
    grad = sds.gradient(_eps(5), t, "a smiling face")
    w = 1.0 - fake_prior.alphas_cumprod[300].item()
    torch.testing.assert_close(grad, torch.full_like(grad, w * EPS_CFG))


def test_random_noise_mode_uses_generator(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0, weighting="constant")
    latents = _eps(6)
    grad = sds.gradient(latents, torch.tensor([300, 300]), "p", generator=torch.Generator().manual_seed(9))
    eps = torch.randn(latents.shape, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(grad, EPS_CFG - eps, atol=1e-4, rtol=1e-5)


def test_gradient_applies_topk(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0, topk=100)
    grad = sds.gradient(_eps(7), torch.tensor([300, 600]), "p", eps=_eps(8))
    assert int((grad != 0).sum()) == 100


def test_invalid_noise_name():
    with pytest.raises(UserError, match="noise"):
        ScoreDistillation(prior=None, noise="gaussian")


# --- top-k and gradient injection ----------------------------------------------------------------------------


def test_topk_sparsify_is_over_the_whole_batch():
    g = torch.tensor([[[[5.0, -1.0], [0.5, -7.0]]], [[[0.1, 2.0], [-0.2, 0.3]]]])  # (2, 1, 2, 2)
    # the 3 largest magnitudes overall are −7, 5 (sample 0) and 2 (sample 1); a per-sample top-k would differ
    expected = torch.tensor([[[[5.0, 0.0], [0.0, -7.0]]], [[[0.0, 2.0], [0.0, 0.0]]]])
    assert torch.equal(topk_sparsify(g, 3), expected)
    expected1 = torch.zeros_like(g)
    expected1[0, 0, 1, 1] = -7.0
    assert torch.equal(topk_sparsify(g, 1), expected1)
    for k in (None, 0, 8, 100):  # no sparsification
        assert torch.equal(topk_sparsify(g, k), g)


def test_topk_sparsify_per_sample_keeps_k_in_each_sample():
    g = torch.tensor([[[[5.0, -1.0], [0.5, -7.0]]], [[[0.1, 2.0], [-0.2, 0.3]]]])  # (2, 1, 2, 2)
    # k = 2 in EACH sample: sample 0 keeps −7 and 5; sample 1 keeps 2 and 0.3 (the batch-wide top-2 would keep
    # −7 and 5 only, leaving sample 1 all zeros)
    expected = torch.tensor([[[[5.0, 0.0], [0.0, -7.0]]], [[[0.0, 2.0], [0.0, 0.3]]]])
    out = topk_sparsify(g, 2, per_sample=True)
    assert torch.equal(out, expected)
    assert (out != 0).flatten(1).sum(1).tolist() == [2, 2]
    expected1 = torch.tensor([[[[0.0, 0.0], [0.0, -7.0]]], [[[0.0, 2.0], [0.0, 0.0]]]])
    assert torch.equal(topk_sparsify(g, 1, per_sample=True), expected1)
    # a sample's result does not depend on its batch neighbours
    assert torch.equal(topk_sparsify(g[1:], 2, per_sample=True), expected[1:])
    for k in (None, 0, 4, 100):  # k >= entries per sample (4): no sparsification
        assert torch.equal(topk_sparsify(g, k, per_sample=True), g)
    # the same k = 4 batch-wide (8 entries in scope): −7, 5, −1 from sample 0 and 2 from sample 1
    expected_batch4 = torch.tensor([[[[5.0, -1.0], [0.0, -7.0]]], [[[0.0, 2.0], [0.0, 0.0]]]])
    assert torch.equal(topk_sparsify(g, 4), expected_batch4)


def test_sds_topk_scope_batch_wide_by_default_per_sample_on_request(fake_prior):
    # sample 1's noise ≈ ε̂_cfg, so its gradient (1 − ᾱ)(ε̂_cfg − ε) is tiny next to sample 0's
    eps = _eps(8)
    eps[1] = EPS_CFG + 1e-3 * eps[1]
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0, topk=100)
    t = torch.tensor([300, 300])
    batch = sds.gradient(_eps(7), t, "p", eps=eps)  # what training uses
    assert (batch != 0).flatten(1).sum(1).tolist() == [100, 0]
    per = sds.gradient(_eps(7), t, "p", eps=eps, per_sample_topk=True)  # what the timestep scan uses
    assert (per != 0).flatten(1).sum(1).tolist() == [100, 100]
    torch.testing.assert_close(per[:1], batch[:1], rtol=0, atol=0)
    alone = sds.gradient(_eps(7)[1:], t[1:], "p", eps=eps[1:])  # sample 1 on its own: same as per-sample
    torch.testing.assert_close(per[1:], alone, rtol=0, atol=0)


def test_per_sample_generators_make_a_sample_independent_of_its_batch(fake_prior):
    sds = ScoreDistillation(fake_prior, guidance_scale=100.0, weighting="constant")
    latents = _eps(6)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12)]  # noqa: E731
    grad = sds.gradient(latents, torch.tensor([300, 300]), "p", generator=gens())
    for i, seed in enumerate((11, 12)):
        eps_i = torch.randn((1, *latents.shape[1:]), generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(grad[i : i + 1], EPS_CFG - eps_i, atol=1e-4, rtol=1e-5)
    alone = sds.gradient(latents[1:], torch.tensor([300]), "p", generator=gens()[1:])
    torch.testing.assert_close(grad[1:], alone, rtol=0, atol=0)
    with pytest.raises(ValueError, match="generators"):
        sds.gradient(latents, torch.tensor([300, 300]), "p", generator=gens()[:1])


def test_inject_gradient_exact_and_not_batch_averaged():
    # dyadic values: every intermediate is exact in float32
    z = (torch.arange(8, dtype=torch.float32).view(2, 1, 2, 2) / 4).requires_grad_(True)
    g = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]], [[[-1.0, 0.0], [2.0, 0.25]]]])
    loss = inject_gradient(z, g)
    # ½‖g‖² = ½ (1 + 4 + 0.25 + 9 + 1 + 0 + 4 + 0.0625) = 9.65625, summed over the batch of 2, not averaged
    assert loss.ndim == 0 and loss.item() == 9.65625
    (dz,) = torch.autograd.grad(loss, z)
    assert torch.equal(dz, g)


def test_inject_gradient_flows_upstream():
    w = torch.tensor(2.0, requires_grad=True)
    z = w * torch.ones(1, 1, 2, 2)
    g = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    inject_gradient(z, g).backward()
    assert w.grad.item() == 10.0  # dL/dw = Σ g · dz/dw = 1 + 2 + 3 + 4


# --- the real tiny SD prior ------------------------------------------------------------------------------------


class ImageMaker(nn.Module):
    """A differentiable stand-in for a generator: images = tanh(conv(input)) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Parameter(torch.randn(2, 3, 32, 32))
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self):
        return torch.tanh(self.conv(self.inp))


def test_forward_reaches_upstream_parameters(sd_prior):
    sds = ScoreDistillation(sd_prior, guidance_scale=100.0, topk=64)
    maker = ImageMaker()
    res = sds(maker(), 500, "a smiling face", generator=torch.Generator().manual_seed(0))
    assert res.grad.shape == res.latents.shape == (2, 4, 16, 16)
    assert torch.equal(res.t, torch.tensor([500, 500]))
    assert int((res.grad != 0).sum()) == 64
    assert res.noise_mse.ndim == 0 and res.noise_mse.item() > 0
    (dz,) = torch.autograd.grad(res.loss, res.latents, retain_graph=True)
    torch.testing.assert_close(dz, res.grad, atol=1e-6, rtol=1e-6)
    res.loss.backward()
    for p in (maker.conv.weight, maker.conv.bias, maker.inp):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in sd_prior.parameters())  # the frozen prior collects nothing


def test_forward_is_reproducible_with_generator(sd_prior):
    sds = ScoreDistillation(sd_prior, guidance_scale=100.0)
    images = ImageMaker()().detach()
    run = lambda seed: sds(images, torch.tensor([100, 700]), "a cat", generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1).grad, run(1).grad)
    assert not torch.equal(run(1).grad, run(2).grad)


@pytest.mark.parametrize("size", [32, 48])
def test_image_gradient(sd_prior, size):
    sds = ScoreDistillation(sd_prior, guidance_scale=100.0)
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gx = sds.image_gradient(images, 400, "a smiling face", generator=torch.Generator().manual_seed(0))
    assert gx.shape == images.shape
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0
    assert not images.requires_grad and images.grad is None
    # it is ∂L_SDS/∂x of the forward pass (same noise): the derivative of the injected loss w.r.t. the image
    x = images.clone().requires_grad_(True)
    res = sds(x, 400, "a smiling face", generator=torch.Generator().manual_seed(0))
    (expected,) = torch.autograd.grad(res.loss, x)
    torch.testing.assert_close(gx, expected)
