"""Noise-schedule arithmetic shared by every method: ᾱ_t, SNR(t), x₀ from ε, and loss weightings.

All functions take a 1-D ``alphas_cumprod`` table (length T, e.g. ``scheduler.alphas_cumprod``) and integer
timesteps ``t`` (any shape) and return tensors shaped like ``t`` — so they work per sample on batches.
``expand_like`` broadcasts such a per-sample value against an image batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from diffedit_lab.utils.errors import UserError


def betas_float64(scheduler: Any) -> torch.Tensor:
    """The betas of a diffusers scheduler recomputed in float64 from its config, as guided-diffusion builds them
    (``np.linspace(..., dtype=float64)``; the cosine schedule from Python floats). diffusers keeps its betas and
    ᾱ in float32, which puts 1 − ᾱ_t near t = 0 off by ~1e-4 relative. ``trained_betas`` are taken as given;
    schedules without a closed form here (``laplace``, ``sigmoid``, zero-terminal-SNR rescaling) fall back to the
    scheduler's own float32 betas, upcast."""
    cfg = scheduler.config
    n, kind = int(cfg.num_train_timesteps), cfg.get("beta_schedule", "linear")
    if cfg.get("trained_betas") is not None:
        return torch.from_numpy(np.asarray(cfg.trained_betas, dtype=np.float64).copy())
    if cfg.get("rescale_betas_zero_snr", False):
        kind = None
    if kind == "linear":
        betas = np.linspace(cfg.beta_start, cfg.beta_end, n, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=np.float64) ** 2
    elif kind == "squaredcos_cap_v2":

        def ab(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - ab((i + 1) / n) / ab(i / n), 0.999) for i in range(n)], dtype=np.float64)
    else:
        return scheduler.betas.double().cpu()
    return torch.from_numpy(betas)


def alpha_bar(alphas_cumprod: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """ᾱ_t gathered for (a batch of) integer timesteps, in float32."""
    t = torch.as_tensor(t, device=alphas_cumprod.device).long()
    return alphas_cumprod.float()[t]


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t)."""
    a = alpha_bar(alphas_cumprod, t)
    return a / (1.0 - a)


def expand_like(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (B,) tensor to (B,1,1,...) so it broadcasts against ``x`` (B,C,H,W)."""
    values = values.to(device=x.device, dtype=x.dtype)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (x.ndim - 1)))


def add_noise(x0: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor, t) -> torch.Tensor:
    """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (the forward process q(x_t | x₀))."""
    a = expand_like(alpha_bar(alphas_cumprod, t), x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor, t) -> torch.Tensor:
    """The model's x₀ estimate (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t — exact inverse of :func:`add_noise`."""
    a = expand_like(alpha_bar(alphas_cumprod, t), x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alphas_cumprod: torch.Tensor, t) -> torch.Tensor:
    a = expand_like(alpha_bar(alphas_cumprod, t), x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


# --- loss weightings w(t) --------------------------------------------------------------------------------------


def weight_constant(alphas_cumprod: torch.Tensor, t, **_) -> torch.Tensor:
    """w(t) = 1."""
    return torch.ones_like(alpha_bar(alphas_cumprod, t))


def weight_p2(alphas_cumprod: torch.Tensor, t, gamma: float = 1.0, k: float = 1.0) -> torch.Tensor:
    """P2 weighting w(t) = 1 / (k + SNR(t))^γ (Choi et al.); with k = 1 this is (1 − ᾱ_t)^γ."""
    return (k + snr(alphas_cumprod, t)) ** (-gamma)


def weight_min_snr(alphas_cumprod: torch.Tensor, t, gamma: float = 5.0, **_) -> torch.Tensor:
    """Min-SNR-γ for ε-prediction: w(t) = min(SNR(t), γ) / SNR(t) (Hang et al.)."""
    s = snr(alphas_cumprod, t)
    return torch.clamp(s, max=gamma) / s


def weight_one_minus_alpha(alphas_cumprod: torch.Tensor, t, **_) -> torch.Tensor:
    """w(t) = 1 − ᾱ_t: the score-distillation weighting of DreamFusion / SDD."""
    return 1.0 - alpha_bar(alphas_cumprod, t)


WEIGHTINGS = {
    "constant": weight_constant,
    "p2": weight_p2,
    "min_snr": weight_min_snr,
    "one_minus_alpha": weight_one_minus_alpha,
}


def loss_weight(kind: str, alphas_cumprod: torch.Tensor, t, **params) -> torch.Tensor:
    """Look up a weighting by name (``constant``, ``p2``, ``min_snr``, ``one_minus_alpha``)."""
    try:
        fn = WEIGHTINGS[kind]
    except KeyError:
        raise UserError(f"unknown loss weighting '{kind}'; choose one of {sorted(WEIGHTINGS)}") from None
    return fn(alphas_cumprod, t, **params)
