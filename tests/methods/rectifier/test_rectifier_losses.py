"""The two objectives against hand computations, and Algorithm 1's defining property: every step noises the
ORIGINAL image (x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε), never a previous edit."""

from __future__ import annotations

import torch

from diffedit_lab.methods.rectifier.losses import draw_timesteps, edit_loss, fit_loss
from diffedit_lab.testing.clip import tiny_clip
from diffedit_lab.testing.priors import tiny_unet_prior
from diffedit_lab.testing.rectifier import tiny_rectifier


def _batch():
    g = torch.Generator().manual_seed(2)
    return (
        torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
        torch.randn(2, 3, 32, 32, generator=g),
        torch.tensor([50, 600]),
    )


def test_fit_loss_is_the_noise_fitting_mse_and_equals_the_base_model_at_init():
    prior = tiny_unet_prior(learned_variance=True)
    net = tiny_rectifier(prior.unet)
    x0, eps, t = _batch()
    terms = fit_loss(prior, net, x0, t, eps)
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        hand = ((prior.predict_eps(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2).mean()
    torch.testing.assert_close(terms.base_mse, hand, rtol=1e-6, atol=0)
    torch.testing.assert_close(terms.loss.detach(), hand, rtol=1e-5, atol=0)  # Δ = 0: the same model
    assert terms.loss.requires_grad


def test_edit_loss_matches_equation_6_by_hand():
    prior, clip = tiny_unet_prior(), tiny_clip()
    net = tiny_rectifier(prior.unet)
    x0, eps, t = _batch()
    terms = edit_loss(prior, net, clip, x0, t, eps, "face", "smiling face", lambda_clip=0.5, lambda_l1=2.0)
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    with torch.no_grad():
        p = (x_t - (1 - a).sqrt() * prior.predict_eps(x_t, t)) / a.sqrt()  # P̃_t (= P_t: Δ = 0 at init)
        d_img = clip.encode_image(p) - clip.encode_image(x0)
        d_txt = clip.encode_text(["smiling face"]) - clip.encode_text(["face"])
        direction = (1 - torch.nn.functional.cosine_similarity(d_img, d_txt, dim=-1)).mean()
        l1 = (p - x0).abs().mean()
    torch.testing.assert_close(terms.x_t, x_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(terms.clip, direction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms.l1, l1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms.loss.detach(), 0.5 * direction + 2.0 * l1, rtol=1e-4, atol=1e-5)


def test_algorithm_1_noises_the_original_image_at_every_step(tmp_path, cache_dir, monkeypatch):
    """Two training steps of the edit stage on one batch: what gets noised is the batch's x₀ both times (not
    step 1's edited estimate), and what the U-Net sees is exactly that noised x₀."""
    from diffedit_lab.methods.stage import Stage
    from diffedit_lab.run import build_method
    from diffedit_lab.utils.config import compose_config
    from tests.helpers import tiny_overrides

    cfg = compose_config([*tiny_overrides(tmp_path, cache_dir, method="rectifier"), "method.edit.lambda_clip=0"])
    module = build_method(cfg.method)
    module.build_editor()
    module.stage = Stage("edit", train=True)
    base = module.base
    noised, seen = [], []
    add_noise, predict = base.add_noise, base.predict_eps

    def spy_add_noise(x0, eps, t):
        out = add_noise(x0, eps, t)
        noised.append((x0.clone(), eps.clone(), t.clone(), out.clone()))
        return out

    def spy_predict(x_t, t, **kw):
        seen.append(x_t.clone())
        return predict(x_t, t, **kw)

    monkeypatch.setattr(base, "add_noise", spy_add_noise)
    monkeypatch.setattr(base, "predict_eps", spy_predict)
    x0, _, _ = _batch()
    opt = torch.optim.Adam(module.editor.parameters(), lr=0.1)
    edited = []
    for _ in range(2):
        loss = module.training_step({"image": x0}, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        edited.append(module.editor.subnets[0].head_out.weight.detach().clone())
    assert not torch.equal(edited[0], torch.zeros_like(edited[0]))  # the editor did change after step 1
    assert len(noised) == 2
    for x_src, eps, t, x_t in noised:
        assert torch.equal(x_src, x0)  # the original image, both steps
        a = base.alphas_cumprod[t].view(-1, 1, 1, 1)
        torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * eps, rtol=0, atol=1e-6)
    assert not torch.equal(noised[0][1], noised[1][1])  # fresh ε each step (the resumable stream)
    assert all(any(torch.equal(s, x_t) for s in seen) for *_, x_t in noised)  # the U-Net saw exactly those x_t


def test_timesteps_are_uniform_over_all_or_over_the_schedule():
    g = torch.Generator().manual_seed(0)
    t = draw_timesteps(4000, 1000, g)
    assert t.min() >= 0 and t.max() <= 999 and len(t.unique()) > 900
    grid = torch.tensor([981, 961, 1])
    assert set(draw_timesteps(200, 1000, g, grid).tolist()) == {981, 961, 1}
