"""SDFT's L_vb against an independent float64 reference of the official code (JiwanHur/SDFT on guided-diffusion):
the tanh approximation of the normal CDF, the discretised decoder NLL, the schedule tables (float64, then float32)
and L_vb itself at t ∈ {0, 1, 2, T/2, T−1}. The reference is written here with Python floats and ``math`` only."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffedit_lab.diffusion import schedule
from diffedit_lab.methods.sdft.config import LossConfig
from diffedit_lab.methods.sdft.losses import (
    PosteriorTable,
    approx_standard_normal_cdf,
    discretized_gaussian_nll,
    sdft_loss,
)
from diffedit_lab.utils.config import method_settings
from diffedit_lab.utils.schema import ConfigError

# --- the float64 reference -------------------------------------------------------------------------------------

T = 1000
BETA = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]  # guided-diffusion's "linear", T = 1000
AB: list[float] = []
for _b in BETA:
    AB.append((AB[-1] if AB else 1.0) * (1.0 - _b))
LN2 = math.log(2.0)


def ab_prev(t: int) -> float:
    return 1.0 if t == 0 else AB[t - 1]


def post_var(t: int) -> float:
    return BETA[t] * (1.0 - ab_prev(t)) / (1.0 - AB[t])


def phi_exact(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def phi_approx(z: float) -> float:
    return 0.5 * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


PHI = {"approx": phi_approx, "exact": phi_exact}


def ref_nll(x: float, mean: float, sd: float, phi) -> float:
    """−log P(x) of the 256-bin discretised Gaussian (edge bins to ±∞, probabilities clamped at 1e-12), nats."""
    upper, lower = phi((x - mean + 1 / 255) / sd), phi((x - mean - 1 / 255) / sd)
    p = upper if x < -0.999 else (1.0 - lower if x > 0.999 else upper - lower)
    return -math.log(max(p, 1e-12))


def ref_vb(t: int, x0: list[float], eps: list[float], eps_hat: list[float], v: list[float], cdf: str) -> float:
    """L_vb of one sample in bits/dim: KL(q(x_{t−1}|x_t,x₀) ‖ p(x_{t−1}|x_t)) for t > 0, the decoder NLL at t = 0."""
    a, b = AB[t], BETA[t]
    c1 = b * math.sqrt(ab_prev(t)) / (1.0 - a)
    c2 = (1.0 - ab_prev(t)) * math.sqrt(1.0 - b) / (1.0 - a)
    lv_true = math.log(post_var(1) if t == 0 else post_var(t))
    out = []
    for x, e, eh, vv in zip(x0, eps, eps_hat, v, strict=True):
        x_t = math.sqrt(a) * x + math.sqrt(1.0 - a) * e
        x0_hat = (x_t - math.sqrt(1.0 - a) * eh) / math.sqrt(a)
        mu, mu_hat = c1 * x + c2 * x_t, c1 * x0_hat + c2 * x_t
        f = (vv + 1.0) / 2.0
        lv = f * math.log(b) + (1.0 - f) * lv_true
        if t == 0:
            out.append(ref_nll(x, mu_hat, math.exp(0.5 * lv), PHI[cdf]))
        else:
            out.append(0.5 * (-1.0 + lv - lv_true + math.exp(lv_true - lv) + (mu - mu_hat) ** 2 * math.exp(-lv)))
    return sum(out) / len(out) / LN2


# --- the CDF and the decoder NLL -------------------------------------------------------------------------------

XS = [-3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.2, 4.0]


def test_tanh_cdf_by_hand():
    got = approx_standard_normal_cdf(torch.tensor(XS)).tolist()
    assert got == pytest.approx([phi_approx(x) for x in XS], rel=1e-6, abs=1e-7)
    got64 = approx_standard_normal_cdf(torch.tensor(XS, dtype=torch.float64)).tolist()
    assert got64 == pytest.approx([phi_approx(x) for x in XS], rel=1e-14, abs=1e-16)
    # an approximation: off from Φ by up to ~2e-4, exact at 0 and symmetric
    gaps = [abs(phi_approx(x) - phi_exact(x)) for x in XS]
    assert max(gaps) < 2e-4 and gaps[XS.index(1.0)] > 1e-5 and gaps[XS.index(0.0)] == 0.0


@pytest.mark.parametrize("cdf", ["approx", "exact"])
def test_discretized_nll_by_hand(cdf):
    """Interior bins, both edge bins and the 1e-12 clamp, on a small tensor, vs the float64 formula."""
    x = [0.0, 0.2, -1.0, 1.0, 0.0, 127 / 127.5 - 1]
    mean = [0.003, 0.19, -0.995, 0.99, 1.0, -0.01]
    sd = [0.01, 0.02, 0.008, 0.012, 0.01, 0.007]
    got = discretized_gaussian_nll(torch.tensor(x), torch.tensor(mean), torch.tensor(sd).log(), cdf=cdf).tolist()
    want = [ref_nll(*args, PHI[cdf]) for args in zip(x, mean, sd, strict=True)]
    assert want[4] == pytest.approx(-math.log(1e-12))  # 100 σ away: clamped
    assert got == pytest.approx(want, rel=1e-5)


# --- the schedule tables -----------------------------------------------------------------------------------------


def test_tables_are_float64_computed_near_t0():
    tab = PosteriorTable.from_scheduler(DDPMScheduler(num_train_timesteps=T))
    for t in range(4):
        a, b = AB[t], BETA[t]
        want = {
            "alphas_cumprod": a,
            "sqrt_alphas_cumprod": math.sqrt(a),
            "sqrt_one_minus_alphas_cumprod": math.sqrt(1 - a),
            "sqrt_recip_alphas_cumprod": math.sqrt(1 / a),
            "sqrt_recipm1_alphas_cumprod": math.sqrt(1 / a - 1),
            "posterior_variance": post_var(t),
            "log_var_clipped": math.log(post_var(max(t, 1))),
            "log_beta": math.log(b),
            "coef_x0": b * math.sqrt(ab_prev(t)) / (1 - a),
            "coef_xt": (1 - ab_prev(t)) * math.sqrt(1 - b) / (1 - a),
        }
        for name, value in want.items():
            assert getattr(tab, name)[t].dtype == torch.float32
            assert float(getattr(tab, name)[t]) == pytest.approx(value, rel=1e-7, abs=1e-12), (name, t)
    # diffusers' float32 chain is what this replaces: its 1 − ᾱ_0 is off by ~1.7e-4 relative
    sched = DDPMScheduler(num_train_timesteps=T)
    assert abs(float(1 - sched.alphas_cumprod[0]) / (1 - AB[0]) - 1) > 1e-5


@pytest.mark.parametrize(
    "config",
    [
        dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        dict(beta_schedule="squaredcos_cap_v2"),
    ],
)
def test_float64_betas_by_hand(config):
    n = 50
    betas = schedule.betas_float64(DDPMScheduler(num_train_timesteps=n, **config))
    assert betas.dtype == torch.float64 and betas.shape == (n,)
    if config["beta_schedule"] == "linear":
        want = [1e-4 + (0.02 - 1e-4) * i / (n - 1) for i in range(n)]
    elif config["beta_schedule"] == "scaled_linear":
        lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
        want = [(lo + (hi - lo) * i / (n - 1)) ** 2 for i in range(n)]
    else:
        ab = [math.cos((s / n + 0.008) / 1.008 * math.pi / 2) ** 2 for s in range(n + 1)]
        want = [min(1 - ab[i + 1] / ab[i], 0.999) for i in range(n)]
    assert betas.tolist() == pytest.approx(want, rel=1e-13)


# --- L_vb through the loss --------------------------------------------------------------------------------------

TS = [0, 1, 2, T // 2, T - 1]
loss_config = functools.partial(method_settings, LossConfig, "sdft", "loss")  # conf/method/sdft.yaml's + overrides
SHAPE = (len(TS), 3, 8, 8)


class FixedOutput(torch.nn.Module):
    """A learned-σ stand-in whose raw output is a fixed [ε̂; v] whatever the input."""

    def __init__(self, eps_hat: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.out = torch.cat([eps_hat, v], 1)
        self.in_channels, self.learned_variance = 3, True
        self.alphas_cumprod = DDPMScheduler(num_train_timesteps=T).alphas_cumprod

    def forward_raw(self, x, t):
        return self.out


def _inputs():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, SHAPE, generator=g).float() / 127.5 - 1  # uint8 pixels in [−1, 1], edges included
    eps = torch.randn(SHAPE, generator=g)
    eps_hat = eps + 0.5 * torch.randn(SHAPE, generator=g)
    v = torch.rand(SHAPE, generator=g) * 2 - 1
    return x0, eps, eps_hat, v


def _ref(x0, eps, eps_hat, v, cdf: str) -> list[float]:
    rows = zip(x0.flatten(1).tolist(), eps.flatten(1).tolist(), eps_hat.flatten(1).tolist(), v.flatten(1).tolist())
    return [ref_vb(t, *row, cdf) for t, row in zip(TS, rows, strict=True)]


def _vb(cdf: str | None) -> torch.Tensor:
    x0, eps, eps_hat, v = _inputs()
    tab = PosteriorTable.from_scheduler(DDPMScheduler(num_train_timesteps=T))
    extra = {} if cdf is None else {"decoder_cdf": cdf}
    cfg = loss_config(lambda_distill=0.0, lambda_aux=0.0, **extra)
    return sdft_loss(FixedOutput(eps_hat, v), None, x0, eps, torch.tensor(TS), cfg, tab).vb


@pytest.mark.parametrize("cdf", ["approx", "exact"])
def test_vb_matches_the_float64_reference(cdf):
    """Each per-sample term (decoder NLL at t = 0, KLs at t = 1, 2, T/2, T−1) to 1e-5 relative."""
    x0, eps, eps_hat, v = _inputs()
    want = _ref(x0, eps, eps_hat, v, cdf)
    got = _vb(cdf).tolist()
    for t, g, w in zip(TS, got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-5), t


def test_default_is_the_approx_cdf_and_exact_differs_by_the_expected_amount():
    assert loss_config().decoder_cdf == "approx"
    x0, eps, eps_hat, v = _inputs()
    default, approx, exact = _vb(None), _vb("approx"), _vb("exact")
    assert torch.equal(default, approx)
    assert torch.equal(approx[1:], exact[1:])  # only the decoder NLL at t = 0 uses the CDF
    gap = _ref(x0, eps, eps_hat, v, "approx")[0] - _ref(x0, eps, eps_hat, v, "exact")[0]
    assert abs(gap) > 1e-5  # the approximation is visible in L_vb at t = 0 ...
    assert float(approx[0] - exact[0]) == pytest.approx(gap, rel=0.01)  # ... by the float64 reference's amount


def test_a_wrong_decoder_cdf_is_a_one_line_error():
    with pytest.raises(ConfigError) as err:
        loss_config(decoder_cdf="erf")
    assert str(err.value) == "method.loss.decoder_cdf='erf': expected one of ['approx', 'exact']"
