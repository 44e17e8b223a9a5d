"""DDIM sampling/inversion, DDPM and SDEdit.

Random tiny UNets are far too rough for DDIM inversion to be exact, so the round-trip and distribution checks use
an analytic prior whose ε-predictor is exact for Gaussian data (derivation in :class:`GaussianPrior`).
"""

import pytest
import torch
from diffusers import DDPMScheduler

from diffedit_lab.diffusion import samplers
from diffedit_lab.diffusion.priors import DiffusionPrior
from diffedit_lab.utils.errors import UserError

SIGMA = 0.5


class GaussianPrior(DiffusionPrior):
    """The exact ε-predictor for data x₀ ~ N(0, σ²I) under the linear DDPM schedule (T = 1000).

    x_t = √ᾱ x₀ + √(1−ᾱ) ε with x₀ ⟂ ε, both zero-mean Gaussian, so (ε, x_t) is jointly Gaussian per coordinate:
        Var(x_t) = ᾱσ² + (1 − ᾱ),   Cov(ε, x_t) = √(1−ᾱ)
    and the MMSE predictor is the linear regression
        ε̂(x_t, t) = E[ε | x_t] = Cov(ε, x_t) / Var(x_t) · x_t = √(1−ᾱ_t) · x_t / (ᾱ_t σ² + 1 − ᾱ_t).
    (:func:`test_gaussian_prior_is_the_regression_of_eps_on_x_t` confirms it by Monte Carlo.)
    """

    def __init__(self, sigma: float = SIGMA):
        super().__init__(DDPMScheduler(num_train_timesteps=1000))
        self.sigma = sigma
        self.calls = 0
        self.seen: list[int] = []  # timesteps of the calls, for checks of the schedule walked

    def predict_eps(self, x_t, t, **_):
        self.calls += 1
        self.seen.append(int(torch.as_tensor(t).reshape(-1)[0]))
        a = self.alphas_cumprod[torch.as_tensor(t).long()]
        a = a.reshape(-1, *([1] * (x_t.ndim - 1))) if a.ndim else a
        return (1 - a).sqrt() * x_t / (a * self.sigma**2 + 1 - a)


@pytest.fixture(scope="module")
def gauss() -> GaussianPrior:
    return GaussianPrior()


def _data(shape=(4, 3, 16, 16), seed=0, sigma=SIGMA):
    return sigma * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_gaussian_prior_is_the_regression_of_eps_on_x_t(gauss):
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x0, eps = SIGMA * torch.randn(n, generator=g), torch.randn(n, generator=g)
    for t in (50, 400, 900):
        x_t = gauss.add_noise(x0, eps, torch.tensor(t))
        slope_mc = (eps * x_t).mean() / (x_t * x_t).mean()
        slope = gauss.predict_eps(torch.ones(1), t).item()
        assert abs(slope - slope_mc.item()) < 0.01 * max(1.0, slope)


def _round_trip_error(prior, x0, n):
    x_T = samplers.ddim_invert(prior, x0, num_steps=n)
    rec = samplers.ddim_sample(prior, x_T, num_steps=n, clip_sample=False)
    return (rec - x0).abs().max().item(), x_T


def test_ddim_inversion_round_trip(gauss):
    x0 = _data()
    err10, _ = _round_trip_error(gauss, x0, 10)
    err100, x_T = _round_trip_error(gauss, x0, 100)
    # measured: ≈ 0.56 at 10 steps, 0.11 at 50, 0.055 at 100 — the DDIM discretisation error shrinks with n
    assert err100 < 0.1
    assert err100 < err10 / 4
    # x_T is (close to) standard normal noise: ᾱ_T σ² + 1 − ᾱ_T ≈ 1
    assert 0.9 < x_T.std().item() < 1.1
    assert abs(x_T.mean().item()) < 0.1


def test_partial_inversion_pairs_with_start_step(gauss):
    x0, n, k = _data(seed=3), 100, 30
    gauss.seen = []
    x_mid = samplers.ddim_invert(gauss, x0, num_steps=n, end_step=k)
    inverted = list(gauss.seen)
    assert 0.5 < x_mid.std().item() < 0.95  # partly noised, not all the way to x_T

    gauss.seen = []
    rec = samplers.ddim_sample(gauss, x_mid, num_steps=n, start_step=n - k, clip_sample=False)
    # the documented pairing retraces the same timesteps (0, 10, …, 290 up, then 290, …, 0 down)
    assert inverted == list(range(0, 10 * k, 10))
    assert gauss.seen == inverted[::-1]
    assert (rec - x0).abs().max().item() < 0.05  # measured 0.034


def test_ddim_samples_have_the_data_std(gauss):
    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))  # 3072 values
    x0 = samplers.ddim_sample(gauss, x_T, num_steps=100, clip_sample=False)
    assert abs(x0.std().item() - SIGMA) < 0.07
    assert abs(x0.mean().item()) < 0.05
    # η = 0 is deterministic; the same call gives the same samples
    assert torch.equal(x0, samplers.ddim_sample(gauss, x_T, num_steps=100, clip_sample=False))


def test_ddim_eta_uses_generator(gauss):
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    run = lambda seed: samplers.ddim_sample(
        gauss, x_T, num_steps=10, eta=1.0, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))


def test_sampler_step_counts(gauss):
    x = _data(shape=(1, 1, 4, 4))
    for fn, n in ((samplers.ddim_sample, 7), (samplers.ddim_invert, 9), (samplers.ddpm_sample, 5)):
        gauss.calls = 0
        fn(gauss, x, num_steps=n)
        assert gauss.calls == n, fn.__name__


def test_sdedit_lower_strength_stays_closer(gauss):
    x0 = _data(seed=4)
    dist = {}
    for strength in (1.0, 0.25):
        out = samplers.sdedit(gauss, x0, strength=strength, num_steps=20, generator=torch.Generator().manual_seed(1))
        assert out.shape == x0.shape
        dist[strength] = (out - x0).pow(2).mean().sqrt().item()
    assert dist[0.25] < 0.8 * dist[1.0]  # measured ≈ 0.45 vs 0.66


def test_sdedit_runs_only_the_tail_of_the_schedule(gauss):
    gauss.calls = 0
    samplers.sdedit(gauss, _data(shape=(1, 1, 4, 4)), strength=0.5, num_steps=40)
    assert gauss.calls == 20  # SDFT's translation: start in the middle of the 40-step schedule


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5])
def test_sdedit_bad_strength(gauss, strength):
    with pytest.raises(UserError, match="strength"):
        samplers.sdedit(gauss, _data(shape=(1, 1, 4, 4)), strength=strength)


@pytest.mark.parametrize("fn", [samplers.ddim_sample, samplers.ddim_invert, samplers.ddpm_sample])
@pytest.mark.parametrize("num_steps", [0, 1001])
def test_bad_num_steps(gauss, fn, num_steps):
    with pytest.raises(UserError, match="num_steps"):
        fn(gauss, _data(shape=(1, 1, 4, 4)), num_steps=num_steps)


@pytest.mark.parametrize("learned_variance", [False, True])
def test_ddpm_sample_tiny_unet(pixel_prior, pixel_prior_lv, learned_variance):
    prior = pixel_prior_lv if learned_variance else pixel_prior
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = samplers.ddpm_sample(prior, x_T, num_steps=4, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, 32, 32)
    assert torch.isfinite(out).all()
    assert not torch.equal(out, x_T)


def test_samplers_in_sd_latent_space_with_cfg(sd_prior):
    cond = {
        "cond": sd_prior.encode_text(["a cat", "a dog"]),
        "uncond": sd_prior.encode_text(["", ""]),
        "guidance_scale": 3.0,
    }
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    outs = {
        "ddim": samplers.ddim_sample(sd_prior, latents, num_steps=3, cond=cond),
        "invert": samplers.ddim_invert(sd_prior, latents, num_steps=3, cond=cond),
        "ddpm": samplers.ddpm_sample(
            sd_prior, latents, num_steps=3, cond=cond, generator=torch.Generator().manual_seed(1)
        ),
        "sdedit": samplers.sdedit(
            sd_prior, latents, strength=0.5, num_steps=4, cond=cond, generator=torch.Generator().manual_seed(1)
        ),
    }
    for name, out in outs.items():
        assert out.shape == (2, 4, 16, 16), name
        assert torch.isfinite(out).all(), name
    # the conditioning reaches the UNet: guidance 3 differs from the unguided run
    plain = samplers.ddim_sample(sd_prior, latents, num_steps=3, cond={"cond": cond["cond"]})
    assert not torch.allclose(plain, outs["ddim"])
    images = sd_prior.to_image_space(outs["ddim"])
    assert images.shape == (2, 3, 32, 32)


# --- per-step hook -----------------------------------------------------------------------------------------------

HOOKED = {
    "ddim": lambda p, x, **kw: samplers.ddim_sample(p, x, clip_sample=False, **kw),
    "invert": lambda p, x, **kw: samplers.ddim_invert(p, x, **kw),
    "ddpm": lambda p, x, **kw: samplers.ddpm_sample(p, x, generator=torch.Generator().manual_seed(3), **kw),
    "sdedit": lambda p, x, **kw: samplers.sdedit(p, x, strength=0.5, generator=torch.Generator().manual_seed(3), **kw),
}


@pytest.mark.parametrize("name", list(HOOKED))
def test_hook_returning_x_or_none_changes_nothing(gauss, name):
    x = _data(shape=(2, 3, 8, 8), seed=5)
    plain = HOOKED[name](gauss, x, num_steps=6)
    assert torch.equal(HOOKED[name](gauss, x, num_steps=6, step_callback=lambda i, t, x: x), plain)
    assert torch.equal(HOOKED[name](gauss, x, num_steps=6, step_callback=lambda i, t, x: None), plain)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ddim", [800, 600, 400, 200, 0]),
        ("invert", [0, 200, 400, 600, 800]),
        ("ddpm", [800, 600, 400, 200, 0]),
        ("sdedit", [200, 0]),  # strength 0.5 of 5 steps: round(2.5) = 2 steps, the tail of the schedule
    ],
)
def test_hook_is_called_once_per_step_with_the_steps_t(gauss, name, expected):
    calls = []
    gauss.seen = []
    hook = lambda i, t, x: calls.append((i, int(t)))
    HOOKED[name](gauss, _data(shape=(1, 1, 4, 4)), num_steps=5, step_callback=hook)
    assert calls == list(enumerate(expected))
    assert gauss.seen == expected  # the t whose ε the step just used


def test_hook_adding_a_constant_one_ddim_step_by_hand(gauss):
    """One DDIM step from t = 0 lands on the x₀ estimate (ᾱ_prev = 1); the hook's return value is the result."""
    x = _data(shape=(2, 3, 4, 4), seed=6)
    a = gauss.alphas_cumprod[0]
    eps = (1 - a).sqrt() * x / (a * SIGMA**2 + 1 - a)
    x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
    seen = {}

    def hook(i, t, x_new):
        seen.update(i=i, t=int(t), x=x_new.clone())
        return x_new + 0.25

    out = samplers.ddim_sample(gauss, x, num_steps=1, clip_sample=False, step_callback=hook)
    assert seen["i"] == 0 and seen["t"] == 0
    torch.testing.assert_close(seen["x"], x0_hat)
    torch.testing.assert_close(out, x0_hat + 0.25)


@pytest.mark.parametrize("name", list(HOOKED))
def test_hook_adding_a_constant_on_one_step(gauss, name):
    x = _data(shape=(2, 3, 4, 4), seed=7)
    plain = HOOKED[name](gauss, x, num_steps=1 if name != "sdedit" else 2)
    hooked = HOOKED[name](gauss, x, num_steps=1 if name != "sdedit" else 2, step_callback=lambda i, t, x: x + 0.25)
    torch.testing.assert_close(hooked, plain + 0.25)


def test_hooked_sample_feeds_the_next_step(gauss):
    """A change made at step 0 is what step 1 starts from: same as resuming the schedule from the changed sample."""
    x = _data(seed=8)
    after_first = {}

    def record(i, t, x_new):
        if i == 0:
            after_first["x"] = x_new.clone()

    samplers.ddim_sample(gauss, x, num_steps=3, clip_sample=False, step_callback=record)
    shifted = samplers.ddim_sample(
        gauss, x, num_steps=3, clip_sample=False, step_callback=lambda i, t, x_new: x_new - 0.1 if i == 0 else None
    )
    resumed = samplers.ddim_sample(gauss, after_first["x"] - 0.1, num_steps=3, start_step=1, clip_sample=False)
    torch.testing.assert_close(shifted, resumed)


def test_energy_guidance_hook_can_take_gradients(gauss):
    """EGSDE-style: x ← x − s·∇E(x) with E = ½‖x‖²; the samplers run under no_grad, the hook enables it."""
    s = 0.2

    def descend(i, t, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(0.5 * x.square().sum(), x)
        return (x - s * grad).detach()

    x = _data(shape=(1, 3, 4, 4), seed=9)
    plain = samplers.ddim_sample(gauss, x, num_steps=1, clip_sample=False)
    guided = samplers.ddim_sample(gauss, x, num_steps=1, clip_sample=False, step_callback=descend)
    torch.testing.assert_close(guided, (1 - s) * plain)
