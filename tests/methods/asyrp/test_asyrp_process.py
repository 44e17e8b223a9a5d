"""Asyrp's grid, the asymmetric step and the inversion against hand computations (tiny random prior)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffedit_lab.methods.asyrp import process
from diffedit_lab.utils.errors import UserError
from tests.methods.asyrp.conftest import nonzero_shift


def test_grid_is_asyrps_linspace_and_training_covers_the_editing_interval():
    grid = process.timestep_grid(50, 999)
    assert grid[:3] == [0, 20, 40] and grid[-2:] == [978, 999] and len(grid) == 50  # ⌊k·999/49 + 1e-6⌋
    pairs = process.training_pairs(50, 999, 500)
    assert len(pairs) == 25 and pairs[0] == (999, 978) and pairs[-1] == (509, 489)  # 24.5 < k ≤ 49
    for n in (4, 40, 50, 100, 1000):  # the released code's formula, in numpy
        assert process.timestep_grid(n, 999) == [int(s + 1e-6) for s in np.linspace(0, 1, n) * 999], n
    full = process.generative_pairs(4, 999)
    assert full == [(999, 666), (666, 333), (333, 0), (0, -1)]
    with pytest.raises(UserError, match="at least 2 steps"):
        process.timestep_grid(1, 999)


def test_stochastic_step_coefficients():
    a_t, a_next = torch.tensor(0.5), torch.tensor(0.8)
    p, eps, z = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    # c1 = √((1 − 0.5/0.8)·0.2/0.5) = √0.15, c2 = √(0.2 − 0.15)
    expected = math.sqrt(0.8) * 1 + math.sqrt(0.05) * 2 + math.sqrt(0.15) * 3
    assert float(process.ddim_next(p, eps, a_t, a_next, eta=1.0, noise=z)) == pytest.approx(expected, rel=1e-6)
    assert float(process.ddim_next(p, eps, a_t, a_next)) == pytest.approx(math.sqrt(0.8) + math.sqrt(0.2) * 2)


def test_asymmetric_steps_match_a_hand_computation(prior):
    """P_t from the shifted ε, the direction from the original ε; the shift injected here by replacing the mid
    block with a wrapper (not the hook under test)."""
    shift = nonzero_shift(prior)
    unet, mid = prior.unet, prior.unet.mid_block

    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mid

        def forward(self, h, temb=None):
            out = self.inner(h, temb)
            return out + shift.delta(out, temb)

    def eps(x, t, shifted=False):
        unet.mid_block = Shifted() if shifted else mid
        try:
            return unet(x, torch.full((x.shape[0],), t)).sample[:, :3]
        finally:
            unet.mid_block = mid

    a = prior.scheduler.alphas_cumprod
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        e, e_s = eps(x_T, 999), eps(x_T, 999, True)
        p = (x_T - (1 - a[999]).sqrt() * e_s) / a[999].sqrt()
        x_1 = a[0].sqrt() * p + (1 - a[0]).sqrt() * e  # D_t: the original ε
        expected = (x_1 - (1 - a[0]).sqrt() * eps(x_1, 0, True)) / a[0].sqrt()  # last step to ᾱ = 1: x = P_0
        got = process.generate(prior, x_T, 2, 999, shift, t_edit=0)
        symmetric = (x_T - (1 - a[999]).sqrt() * e_s) / a[999].sqrt() * a[0].sqrt() + (1 - a[0]).sqrt() * e_s
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (x_1 - symmetric).abs().max() > 1e-3  # the asymmetry matters: plain DDIM with ε̃ is another point
    # outside the editing interval the same call is plain DDIM
    with torch.no_grad():
        plain = process.generate(prior, x_T, 2, 999, shift, t_edit=1000)
        e_0 = eps(a[0].sqrt() * (x_T - (1 - a[999]).sqrt() * e) / a[999].sqrt() + (1 - a[0]).sqrt() * e, 0)
    x_1p = a[0].sqrt() * (x_T - (1 - a[999]).sqrt() * e) / a[999].sqrt() + (1 - a[0]).sqrt() * e
    torch.testing.assert_close(plain, (x_1p - (1 - a[0]).sqrt() * e_0) / a[0].sqrt(), rtol=1e-4, atol=1e-4)


def test_inversion_step_by_hand(prior):
    a = prior.scheduler.alphas_cumprod
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        e = prior.predict_eps(x0, 0)
        p = (x0 - (1 - a[0]).sqrt() * e) / a[0].sqrt()
        expected = a[999].sqrt() * p + (1 - a[999]).sqrt() * e  # x₀ taken as x at t = 0, one step to t₀
        got = process.invert(prior, x0, 2, 999)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_boosting_draws_noise_only_below_t_boost(prior):
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls = []

    def noise(x):
        calls.append(1)
        return torch.zeros_like(x)

    process.generate(prior, x_T, 6, 999, t_boost=200, boost_eta=1.0, noise=noise)  # grid 0, 199, …, 999
    assert len(calls) == 1  # only the step from t = 199 (t = 0 → −1 has c₁ = 0 and is skipped)
