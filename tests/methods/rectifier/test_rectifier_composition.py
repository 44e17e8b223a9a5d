"""The composition ε_θ̂(x_t, t), θ̂ = θ·(1 + R(x₀, P_t, t)), with Δ ≠ 0 (random heads) against the obvious slow
route: P_t computed by hand from the base model, Δ from the net on that P_t, θ·(1 + Δ_i) written into a deep copy
of the U-Net per sample. The fit loss and the edit losses are then checked against that copy (the edit losses on
P̃_t of the MODULATED model, never the base model's P_t)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from diffedit_lab.methods.rectifier.losses import edit_loss, fit_loss
from diffedit_lab.methods.rectifier.rectified import rectified_eps
from diffedit_lab.testing.clip import tiny_clip
from diffedit_lab.testing.priors import tiny_unet_prior
from diffedit_lab.testing.rectifier import tiny_rectifier

ATOL = 2e-5  # the per-sample routes differ from a plain conv only by summation order (test_rectifier_apply)


@pytest.fixture(scope="module")
def prior():
    return tiny_unet_prior(learned_variance=True)


@pytest.fixture(scope="module")
def net(prior):
    """A 'trained' rectifier: both heads random, so Δ ≠ 0 and depends on (x₀, P_t, t); eval mode (fixed BN)."""
    net = tiny_rectifier(prior.unet)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for sub in net.subnets:
            sub.head_out.weight.copy_(0.3 * torch.randn(sub.head_out.weight.shape, generator=g))
            sub.head_out.bias.copy_(0.05 * torch.randn(sub.head_out.bias.shape, generator=g))
    return net.eval().requires_grad_(False)


def _inputs():
    g = torch.Generator().manual_seed(11)
    x0 = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    eps = torch.randn(3, 3, 32, 32, generator=g)
    return x0, eps, torch.tensor([40, 500, 980])  # t = 980: the raw estimate leaves [-1, 1] (clamping matters)


def _hand_p_t(prior, x_t, t, clamp: bool):
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        p = (x_t - (1 - a).sqrt() * prior.predict_eps(x_t, t)) / a.sqrt()
    return p.clamp(-1, 1) if clamp else p


def _copy_eps(prior, net, x0, x_t, t, cond):
    """ε of a deep copy of the U-Net per sample, its modulated kernels θ·(1 + Δ_i), Δ = net(x0, cond, t)."""
    deltas = net(x0, cond, t)
    out = []
    for i in range(len(x0)):
        twin = copy.deepcopy(prior)
        with torch.no_grad():
            for name, delta in deltas.items():
                w = twin.unet.get_submodule(name).weight
                w.copy_(w * (1 + delta[i]))
            out.append(twin.predict_eps(x_t[i : i + 1], t[i : i + 1]))
    return torch.cat(out)


@pytest.mark.parametrize("clip_estimate", [True, False])
@pytest.mark.parametrize("strategy", ["grouped", "vmap"])
def test_rectified_eps_is_a_modified_copy_fed_the_base_estimate(prior, net, strategy, clip_estimate):
    x0, eps, t = _inputs()
    x_t = prior.add_noise(x0, eps, t)
    p_t = _hand_p_t(prior, x_t, t, clip_estimate)
    raw = _hand_p_t(prior, x_t, t, clamp=False)
    assert raw.abs().max() > 1.5  # at t = 980 the clamp changes P_t
    with torch.no_grad():
        out = rectified_eps(prior, net, x0, x_t, t, strategy, clip_estimate)
        reference = _copy_eps(prior, net, x0, x_t, t, p_t)
        # what the usual slips would give: the net fed x_t, or the other side of clip_estimate
        other = raw if clip_estimate else raw.clamp(-1, 1)
        slips = [_copy_eps(prior, net, x0, x_t, t, x_t), _copy_eps(prior, net, x0, x_t, t, other)]
    torch.testing.assert_close(out.p_t, p_t, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.base_eps, prior.predict_eps(x_t, t), rtol=0, atol=0)
    assert (reference - out.base_eps).abs().max() > 1e-2  # Δ ≠ 0 matters
    torch.testing.assert_close(out.eps, reference, rtol=0, atol=ATOL)
    for slip in slips:  # the comparison above can tell them apart
        assert (slip - reference).abs().max() > 100 * ATOL


def test_fit_loss_is_the_noise_mse_of_the_modified_copy(prior, net):
    x0, eps, t = _inputs()
    terms = fit_loss(prior, net, x0, t, eps)
    x_t = prior.add_noise(x0, eps, t)
    with torch.no_grad():
        mine = _copy_eps(prior, net, x0, x_t, t, _hand_p_t(prior, x_t, t, clamp=True))
        base = prior.predict_eps(x_t, t)
    hand = ((eps - mine) ** 2).mean()
    assert abs(hand - ((eps - base) ** 2).mean()) > 1e-3  # the base model's loss would not pass
    torch.testing.assert_close(terms.loss, hand, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms.base_mse, ((eps - base) ** 2).mean(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("clip_estimate", [True, False])
def test_edit_losses_score_the_modulated_models_unclamped_estimate(prior, net, clip_estimate):
    """λ_clip·(1 − cos(E_I(P̃_t) − E_I(x₀), E_T(tgt) − E_T(src))) + λ_l1·mean|P̃_t − x₀|, P̃_t the RAW x₀ estimate of
    the modulated model (its ε from the copy); clip_estimate only changes what conditions R."""
    clip = tiny_clip()
    x0, eps, t = _inputs()
    terms = edit_loss(prior, net, clip, x0, t, eps, "face", "smiling face", 0.5, 2.0, clip_estimate=clip_estimate)
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    with torch.no_grad():
        mine = _copy_eps(prior, net, x0, x_t, t, _hand_p_t(prior, x_t, t, clip_estimate))
        edited = (x_t - (1 - a).sqrt() * mine) / a.sqrt()
        d_img = clip.encode_image(edited) - clip.encode_image(x0)
        d_txt = clip.encode_text(["smiling face"]) - clip.encode_text(["face"])
        direction = (1 - F.cosine_similarity(d_img, d_txt, dim=-1)).mean()
        l1 = (edited - x0).abs().mean()
        base_l1 = (_hand_p_t(prior, x_t, t, clamp=False) - x0).abs().mean()
    assert edited.abs().max() > 1.5  # unclamped: a clamped P̃_t would not pass
    assert abs(l1 - base_l1) > 1e-2  # the base model's P_t would not pass
    # /√ᾱ at t = 980 amplifies the ATOL of ε by ~1/√ᾱ ≈ 20
    torch.testing.assert_close(terms.edited, edited, rtol=0, atol=20 * ATOL)
    torch.testing.assert_close(terms.l1, l1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms.clip, direction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms.loss.detach(), 0.5 * direction + 2.0 * l1, rtol=1e-4, atol=1e-5)
