"""Asyrp's asymmetric reverse process, DDIM inversion and generation on Asyrp's timestep grid.

**Grid.** Asyrp places ``n`` steps at ``⌊linspace(0, t₀, n) + 1e-6⌋`` (t₀ = 999) and steps from each point to the
one below it, the last generative step going to "t = −1" where ᾱ = 1. So a 100-step inversion and a 50-step
generative process both start/end at t₀ (diffusers' ``leading`` spacing would not), which is why this module does
not reuse :mod:`diffedit_lab.diffusion.samplers`.

**Asymmetric step** (Asyrp eq. 4), from x_t to x_{t'} with ᾱ = ``alphas_cumprod``::

    P_t = (x_t − √(1−ᾱ_t) · ε̃) / √ᾱ_t            ε̃ = ε(x_t, t | h + Δh)   (the shifted U-Net)
    x_t' = √ᾱ_t' · P_t + c₂ · ε + c₁ · z          ε  = ε(x_t, t)           (the original U-Net)
    c₁ = η √((1 − ᾱ_t/ᾱ_t')(1 − ᾱ_t')/(1 − ᾱ_t)),  c₂ = √(1 − ᾱ_t' − c₁²),  z ~ N(0, I)

Only the x₀ prediction ("P_t") sees the edit; the direction ("D_t") keeps the original ε. With ε̃ = ε this is the
DDIM step. The shift is applied for t ≥ ``t_edit`` (the editing interval [t₀, t_edit]); below ``t_boost`` the
generation adds noise with ``boost_eta`` (Asyrp's "quality boosting", η = 1); in between it is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffedit_lab.methods.asyrp.hspace import HSpaceShift
from diffedit_lab.utils.errors import UserError

NoiseFn = Callable[[Tensor], Tensor]  # x → z of x's shape (per-image seeded streams at inference)


def timestep_grid(n: int, t_0: int) -> list[int]:
    """Asyrp's ``n`` timesteps 0 … t₀, increasing."""
    if n < 2:
        raise UserError(f"Asyrp needs at least 2 steps on its timestep grid, got {n}")
    return [int(math.floor(t_0 * i / (n - 1) + 1e-6)) for i in range(n)]


def generative_pairs(n: int, t_0: int, down_to: int = -1) -> list[tuple[int, int]]:
    """(t, t_next) from t₀ down, each t ≥ ``down_to``; the step from t = 0 goes to −1 (ᾱ = 1)."""
    grid = timestep_grid(n, t_0)
    pairs = [(grid[i], grid[i - 1] if i else -1) for i in range(n - 1, -1, -1)]
    return [(t, s) for t, s in pairs if t >= down_to]


def training_pairs(n: int, t_0: int, t_edit: int) -> list[tuple[int, int]]:
    """The steps of a training trajectory: the editing interval t ≥ t_edit of the ``n``-step generative grid."""
    return generative_pairs(n, t_0, down_to=t_edit)


def alpha_bar(prior, t: int, like: Tensor) -> Tensor:
    """ᾱ_t as a 0-d float32 tensor on ``like``'s device (ᾱ_{−1} = 1)."""
    if t < 0:
        return torch.ones((), device=like.device)
    return prior.alphas_cumprod[t].to(like.device, torch.float32)


def predict_x0(x_t: Tensor, eps: Tensor, a_t: Tensor) -> Tensor:
    """P_t = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
    return (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def ddim_next(p_t: Tensor, eps: Tensor, a_t: Tensor, a_next: Tensor, eta: float = 0.0, noise: Tensor | None = None):
    """x_{t'} = √ᾱ_t' P_t + c₂ ε + c₁ z (module docstring); ``eta = 0`` is deterministic and needs no noise."""
    if eta == 0:
        return a_next.sqrt() * p_t + (1 - a_next).sqrt() * eps
    c1 = eta * ((1 - a_t / a_next) * (1 - a_next) / (1 - a_t)).sqrt()
    c2 = (1 - a_next - c1**2).clamp(min=0).sqrt()
    return a_next.sqrt() * p_t + c2 * eps + c1 * noise


def eps_pair(prior, shift: HSpaceShift, x: Tensor, t: int, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """(ε, ε̃) at x_t: the original and the shifted U-Net (two calls, see :class:`HSpaceShift`)."""
    return prior.predict_eps(x, t), eps_shifted(prior, shift, x, t, scale)


def eps_shifted(prior, shift: HSpaceShift, x: Tensor, t: int, scale: float = 1.0) -> Tensor:
    """ε̃ = ε(x_t, t | h + scale·Δh) (with gradients to Δh's parameters when grad mode is on)."""
    with shift.active(scale):
        return prior.predict_eps(x, t)


@torch.no_grad()
def invert(prior, x0: Tensor, steps: int, t_0: int) -> Tensor:
    """Deterministic DDIM inversion x₀ → x_{t₀} over ``steps`` grid points (Asyrp: x₀ is taken as x at t = 0)."""
    x = x0.float()
    grid = timestep_grid(steps, t_0)
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        eps = prior.predict_eps(x, t)
        a_t, a_next = alpha_bar(prior, t, x), alpha_bar(prior, t_next, x)
        x = ddim_next(predict_x0(x, eps, a_t), eps, a_t, a_next)
    return x


@torch.no_grad()
def generate(
    prior,
    x_T: Tensor,
    steps: int,
    t_0: int,
    shift: HSpaceShift | None = None,
    t_edit: int = 0,
    scale: float = 1.0,
    t_boost: int = -1,
    boost_eta: float = 0.0,
    noise: NoiseFn | None = None,
) -> Tensor:
    """x_{t₀} → x₀ over ``steps`` grid points: asymmetric for t ≥ ``t_edit`` when a ``shift`` is given, DDIM
    otherwise; η = ``boost_eta`` for t < ``t_boost`` (needs ``noise``). ``shift=None`` is the reconstruction."""
    x = x_T.float()
    for t, t_next in generative_pairs(steps, t_0):
        if shift is not None and t >= t_edit:
            eps, eps_edit = eps_pair(prior, shift, x, t, scale)
        else:
            eps = eps_edit = prior.predict_eps(x, t)
        a_t, a_next = alpha_bar(prior, t, x), alpha_bar(prior, t_next, x)
        eta = boost_eta if t < t_boost and t_next >= 0 else 0.0
        z = noise(x) if eta > 0 else None
        x = ddim_next(predict_x0(x, eps_edit, a_t), eps, a_t, a_next, eta, z)
    return x
