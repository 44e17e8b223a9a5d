"""EGSDE's energies and steps on hand cases (both forms, the option that picks one), and the classifier's shapes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from diffedit_lab.methods.sdft.classifier import DomainClassifier
from diffedit_lab.methods.sdft.egsde import (
    EGSDEGuidance,
    cosine_energy,
    egsde_sample,
    energy_grad,
    low_pass,
    official_step,
)
from diffedit_lab.testing import _seed


def test_low_pass_over_the_whole_image_is_the_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.allclose(low_pass(x, 4), torch.full_like(x, 7.5))
    assert torch.equal(low_pass(x, 1), x)


def test_low_pass_is_egsdes_antialiased_linear_resize_by_hand():
    # factor 2 along a 4-pixel row [0, 1, 2, 3] (constant down the columns): output pixel 0 is centred at 0.5 and
    # weighs positions −1, 0, 1, 2 by the triangle 1 − |d|/2 = ¼, ¾, ¾, ¼ (normalised /2), −1 reflecting to 0:
    # ½·0 + ⅜·1 + ⅛·2 = 0.625; pixel 1 symmetrically 2.375 (a box filter would give 0.5 and 2.5). Linear upsampling
    # at half-pixel centres −¼, ¼, ¾, 1¼: 0.625, ¾·0.625 + ¼·2.375, ¼·0.625 + ¾·2.375, 2.375.
    x = torch.arange(4.0).expand(1, 1, 4, 4)
    row = torch.tensor([0.625, 1.0625, 1.9375, 2.375])
    assert torch.allclose(low_pass(x, 2), row.expand(1, 1, 4, 4))


def test_faithfulness_gradient_by_hand():
    # factor = image size: L(y) is mean(y) everywhere, E = 16·(ȳ − x̄)², ∂E/∂y_ij = 2·(ȳ − x̄)
    y = torch.arange(16.0).reshape(1, 1, 4, 4) / 16  # ȳ = 0.46875
    x = torch.zeros(1, 1, 4, 4)
    grad = energy_grad(y, x, torch.tensor([3]), None, realism=500.0, faith=2.0, factor=4)
    assert torch.allclose(grad, torch.full_like(y, 2.0 * 2 * 0.46875))


def test_realism_gradient_by_hand():
    # features = the image itself; one position with two channels: y = (1, 0), x = (0, 1): cos = 0 and
    # ∂cos/∂y = x/(|y||x|) − cos·y/|y|² = (0, 1). With factor 1 the faithfulness term is ‖y − x‖², gradient 2(y − x).
    y = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    x = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1)
    assert float(cosine_energy(y, x)) == pytest.approx(0.0)
    assert float(cosine_energy(y, y)) == pytest.approx(1.0)
    grad = energy_grad(y, x, torch.tensor([0]), lambda a, t: a, realism=500.0, faith=0.5, factor=1)
    expected = 500.0 * torch.tensor([0.0, 1.0]) + 0.5 * 2 * torch.tensor([1.0, -1.0])
    assert torch.allclose(grad.flatten(), expected)


def test_guidance_step_weight_and_update_by_hand():
    ab = torch.tensor([0.9, 0.8, 0.7, 0.6])
    prior = SimpleNamespace(alphas_cumprod=ab, num_train_timesteps=4)
    source = torch.zeros(1, 1, 2, 2)
    noise = torch.ones(1, 1, 2, 2)
    g = EGSDEGuidance(prior, source, noise, num_steps=2, features=None, realism=0.0, faith=1.0, factor=1)
    assert g.stride == 2
    alpha = 0.6 / 0.8  # step t = 3 → 1
    assert g.step_weight(3) == pytest.approx((1 - alpha) / math.sqrt(alpha))
    alpha0 = 0.8  # the last step t = 1 → −1 (ᾱ_prev = 1)
    assert g.step_weight(1) == pytest.approx((1 - alpha0) / math.sqrt(alpha0))
    x = torch.full((1, 1, 2, 2), 0.5)
    out = g(0, torch.tensor(3), x)
    x_src = math.sqrt(1 - 0.8) * 1.0  # the source (zeros) noised to t = 1 with the fixed noise
    assert torch.allclose(out, x - g.step_weight(3) * 2 * (x - x_src))
    assert g(1, torch.tensor(1), x) is None  # the final image is left alone


def test_domain_classifier_shapes_and_time_dependence():
    torch.manual_seed(0)
    clf = DomainClassifier((8, 16), groups=8)
    x = torch.randn(3, 3, 32, 32)
    t = torch.tensor([0, 500, 999])
    assert clf.features(x, t).shape == (3, 16, 16, 16)
    logits = clf(x, t)
    assert logits.shape == (3,)
    assert not torch.allclose(logits, clf(x, torch.tensor([999, 0, 500])))


# --- the official form -----------------------------------------------------------------------------------------
def test_official_step_by_hand():
    # ᾱ = (0.9, 0.8, 0.7, 0.6), step t = 3 → 1: α = 0.6/0.8 = 0.75, β = 0.25; ε̂(y) = y/2. Faithfulness only, factor 1
    # (no filter), source at t = 0: E = ‖y‖², ∇E = 2y. σ² = β(1 − ᾱ_prev)/(1 − ᾱ_t) = 0.25·0.2/0.4 = 0.125.
    prior = SimpleNamespace(alphas_cumprod=torch.tensor([0.9, 0.8, 0.7, 0.6]), predict_eps=lambda y, t: 0.5 * y)
    y, src, z = torch.full((1, 1, 2, 2), 0.4), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    mean = (0.4 - 0.25 / math.sqrt(0.4) * 0.2) / math.sqrt(0.75)
    expected = mean - 0.25 / math.sqrt(0.75) * 1.0 * 0.8 + math.sqrt(0.125) * 1.0
    out = official_step(prior, y, 3, 1, src, None, realism=0.0, faith=1.0, factor=1, z=z)
    assert torch.allclose(out, torch.full_like(y, expected))
    assert expected == pytest.approx(0.49321, abs=1e-5)
    # the last step t = 0 (ᾱ_prev = 1: α = 0.9, β = 0.1): guidance still, no noise
    last = official_step(prior, y, 0, -1, src, None, realism=0.0, faith=3.0, factor=1)
    by_hand = (0.4 - 0.1 / math.sqrt(0.1) * 0.2) / math.sqrt(0.9) - 0.1 / math.sqrt(0.9) * 3.0 * 0.8
    assert torch.allclose(last, torch.full_like(y, by_hand))


@pytest.fixture(scope="module")
def tiny():
    from diffedit_lab.testing.priors import tiny_unet_prior

    prior = tiny_unet_prior(image_size=16, learned_variance=True, seed=0)
    with _seed.seeded(0):
        clf = DomainClassifier((8, 16), groups=8).requires_grad_(False)
        x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    return prior, clf, x0


def test_official_sampler_against_an_independent_computation(tiny):
    # 4-step schedule (750, 500, 250, 0), strength 0.5: steps t = 250 → 0 and t = 0 → the image. Factor 16 = the
    # image size: the low-pass image is each channel's mean. Draws: the start/source noise e, then z for step 1.
    prior, clf, x0 = tiny
    ab = prior.scheduler.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(3)
    e, z = torch.randn(x0.shape, generator=gen), torch.randn(x0.shape, generator=gen)

    def step(y, t, ab_prev, z):
        alpha = float(ab[t] / ab_prev)
        beta = 1 - alpha
        eps = prior.unet(y, torch.tensor([t] * len(y))).sample[:, :3]  # ε half of the learned-σ output
        mean = (y - beta / math.sqrt(1 - float(ab[t])) * eps) / math.sqrt(alpha)
        x_t = math.sqrt(float(ab[t])) * x0 + math.sqrt(1 - float(ab[t])) * e
        tt = torch.full((len(y),), t)
        with torch.enable_grad():
            yg = y.clone().requires_grad_(True)
            cos = F.cosine_similarity(clf.features(yg, tt), clf.features(x_t, tt), dim=1).mean(dim=(1, 2))
            dist = (yg.mean(dim=(2, 3)) - x_t.mean(dim=(2, 3))).square().sum(1) * 16 * 16
            grad = torch.autograd.grad((500.0 * cos + 2.0 * dist).sum(), yg)[0]
        out = mean - beta / math.sqrt(alpha) * grad
        if z is not None:
            out = out + math.sqrt(beta * (1 - float(ab_prev)) / (1 - float(ab[t]))) * z
        return out

    with torch.no_grad():
        y = math.sqrt(float(ab[250])) * x0 + math.sqrt(1 - float(ab[250])) * e
        y = step(step(y, 250, ab[0], z), 0, 1.0, None)
        out = egsde_sample(prior, x0, clf.features, 500.0, 2.0, 16, 0.5, 4, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, y.float(), atol=1e-4)


def test_official_form_without_energies_is_ddpm_sdedit(tiny):
    # λ_s = λ_i = 0: SDEdit's start point, then diffusers' ancestral DDPM steps (posterior variance, no clipping)
    from diffusers import DDPMScheduler

    prior, clf, x0 = tiny
    sched = DDPMScheduler.from_config(prior.scheduler.config, clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(10)
    run = sched.timesteps[5:]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        y = sched.add_noise(x0, torch.randn(x0.shape, generator=gen), run[:1])
        for t in run:
            y = sched.step(prior.predict_eps(y, t), t, y, generator=gen).prev_sample
        out = egsde_sample(prior, x0, clf.features, 0.0, 0.0, 4, 0.5, 10, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, y, atol=1e-5)


def test_the_form_option_picks_the_sampler(tiny):
    from diffedit_lab.diffusion import samplers
    from diffedit_lab.methods.sdft.config import EGSDEConfig, TranslateConfig
    from diffedit_lab.methods.sdft.inference import TranslateSteps
    from diffedit_lab.utils.config import method_settings

    prior, clf, x0 = tiny
    settings = method_settings(TranslateConfig, "sdft", "translate", method="egsde", steps=4, strength=0.5)
    batch = {"image": x0, "index": torch.arange(2)}

    def translate(form: str) -> torch.Tensor:
        egsde = method_settings(EGSDEConfig, "sdft", "egsde", form=form, downsample=4)
        module = SimpleNamespace(cfg=SimpleNamespace(egsde=egsde), device="cpu", sampling_prior=lambda ema: prior)
        return TranslateSteps(module, settings, seed=5, classifier=clf)(batch, 0)["images"]["translated"]

    gen = torch.Generator().manual_seed(5)
    official = egsde_sample(prior, x0, clf.features, 500.0, 2.0, 4, 0.5, 4, generator=gen)
    gen = torch.Generator().manual_seed(5)
    hook = EGSDEGuidance(prior, x0, torch.randn(x0.shape, generator=gen), 4, clf.features, 500.0, 2.0, 4)
    post_step = samplers.sdedit(prior, x0, strength=0.5, num_steps=4, generator=gen, step_callback=hook)
    assert torch.equal(translate("official"), official)
    assert torch.equal(translate("ddim_post_step"), post_step)
    assert (official - post_step).abs().mean() > 1e-3


def test_the_form_is_validated_at_start_up(compose):
    from diffedit_lab.methods.sdft.config import SDFTConfig
    from diffedit_lab.utils.schema import ConfigError, validate

    cfg = validate(SDFTConfig, compose("method=sdft/tiny").method, "method")
    assert (cfg.egsde.form, cfg.egsde.steps, cfg.egsde.repeats) == ("official", None, 1)
    with pytest.raises(ConfigError) as bad:
        validate(SDFTConfig, compose("method=sdft/tiny", "method.egsde.form=ddim").method, "method")
    assert str(bad.value).startswith("method.egsde.form='ddim': ") and "\n" not in str(bad.value)
    assert "ddim_post_step" in str(bad.value)
    node = compose("method=sdft/tiny", "method.egsde.form=ddim_post_step", "method.egsde.repeats=2").method
    with pytest.raises(ConfigError, match=r"method\.egsde\.repeats=2: only form=official"):
        validate(SDFTConfig, node, "method")
