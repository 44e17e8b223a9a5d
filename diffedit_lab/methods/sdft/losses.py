"""SDFT's training loss (Hur et al., paper 002): the diffusion loss of the student plus self-distillation from the
frozen source model on the noisy input x_t and on the pure-noise auxiliary input ε.

Per sample, with t ~ U{0..T−1}, ε ~ N(0, I) and x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε:

    L = L_simple + L_vb (learned σ only) + λ·w_γ(t)·‖ε_T(x_t,t) − ε_S(x_t,t)‖² + λ'·w_γ'(t)·‖ε_T(ε,t) − ε_S(ε,t)‖²

``‖·‖²`` is the mean over pixels and channels (``mean_flat``, as the guided-diffusion code base SDFT builds on).
``L_vb`` is improved DDPM's variational term for the ``learned_range`` variance parameterisation with the mean
stopped (the ε prediction is detached, so L_vb trains only the variance channels): the KL between the true
posterior q(x_{t−1} | x_t, x₀) and the model's Gaussian, in bits per dimension, and at t = 0 the discretised
Gaussian decoder NLL. Only the ε channels are distilled. x_t and ε go through the student in ONE batched call and
through the teacher in one (no grad).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffedit_lab.diffusion import schedule
from diffedit_lab.methods.sdft.config import LossConfig


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


class PosteriorTable:
    """The DDPM posterior q(x_{t−1} | x_t, x₀) per timestep, from the betas of a diffusers scheduler (float64
    arithmetic, float32 tables): mean coefficients, variance β̃_t and its log clipped at t = 0 to β̃_1."""

    def __init__(self, betas: torch.Tensor) -> None:
        b = betas.double()
        ab = torch.cumprod(1.0 - b, 0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        var = b * (1.0 - ab_prev) / (1.0 - ab)
        self.log_beta = b.log().float()
        self.log_var_clipped = torch.cat([var[1:2], var[1:]]).log().float()
        self.coef_x0 = (b * ab_prev.sqrt() / (1.0 - ab)).float()
        self.coef_xt = ((1.0 - ab_prev) * (1.0 - b).sqrt() / (1.0 - ab)).float()
        self.alphas_cumprod = ab.float()

    def gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        table = getattr(self, name).to(t.device)
        return schedule.expand_like(table[t.long()], like)

    def mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.gather("coef_x0", t, x_t) * x0 + self.gather("coef_xt", t, x_t) * x_t


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """−log P(x) for images x ∈ [−1, 1] quantised to 256 bins of width 2/255 under N(mean, e^{2·log_scale});
    the edge bins extend to ±∞. Elementwise, in nats (exact normal CDF)."""
    inv_std = torch.exp(-log_scale)
    upper = torch.special.ndtr(inv_std * (x - mean + 1.0 / 255))
    lower = torch.special.ndtr(inv_std * (x - mean - 1.0 / 255))
    log_cdf_upper = torch.log(upper.clamp(min=1e-12))
    log_sf_lower = torch.log((1.0 - lower).clamp(min=1e-12))
    log_delta = torch.log((upper - lower).clamp(min=1e-12))
    logp = torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_delta))
    return -logp


def vb_term(
    table: PosteriorTable,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    var_out: torch.Tensor,
) -> torch.Tensor:
    """Improved DDPM's L_vb per sample (bits/dim) for ``learned_range`` variance outputs ``var_out`` ∈ [−1, 1]:
    log σ² = f·log β_t + (1−f)·log β̃_t with f = (v+1)/2. The mean comes from ``eps`` — pass it detached."""
    frac = (var_out + 1.0) / 2.0
    log_var = frac * table.gather("log_beta", t, x_t) + (1.0 - frac) * table.gather("log_var_clipped", t, x_t)
    x0_pred = schedule.x0_from_eps(x_t, eps, table.alphas_cumprod.to(x_t.device), t)
    model_mean = table.mean(x0_pred, x_t, t)
    true_mean = table.mean(x0, x_t, t)
    true_log_var = table.gather("log_var_clipped", t, x_t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, log_var)) / math.log(2.0)
    nll = mean_flat(discretized_gaussian_nll(x0, model_mean, 0.5 * log_var)) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


@dataclass
class LossTerms:
    """Per-sample terms (shape (B,); zeros when a term is off) and the scalar total."""

    total: torch.Tensor
    simple: torch.Tensor
    vb: torch.Tensor
    distill: torch.Tensor  # ‖ε_T(x_t) − ε_S(x_t)‖², unweighted
    aux: torch.Tensor  # ‖ε_T(ε) − ε_S(ε)‖², unweighted
    w_distill: torch.Tensor
    w_aux: torch.Tensor


def term_weight(kind: str, alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, k: float) -> torch.Tensor:
    """w(t) of one distillation term: ``p2`` 1/(k+SNR)^γ, ``min_snr`` min(SNR, γ)/SNR, ``constant`` 1."""
    return schedule.loss_weight(kind, alphas_cumprod, t, gamma=gamma, k=k)


def sdft_loss(
    student,
    teacher,
    x0: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    cfg: LossConfig,
    table: PosteriorTable | None = None,
) -> LossTerms:
    """The SDFT loss of a batch (module docstring). ``student``/``teacher`` are :class:`UnconditionalPrior`-like
    (``forward_raw``, ``predict_eps``, ``in_channels``, ``learned_variance``, ``alphas_cumprod``); ``teacher`` may
    be None when λ = λ' = 0. ``table`` (the posterior of the student's schedule) is needed for learned σ."""
    batch, channels = x0.shape[0], student.in_channels
    alphas_cumprod = student.alphas_cumprod
    x_t = schedule.add_noise(x0, eps, alphas_cumprod, t)
    use_distill, use_aux = cfg.lambda_distill > 0, cfg.lambda_aux > 0
    # one student call on [x_t; ε] (the auxiliary input is exactly the noise ε, at the same t)
    inputs = torch.cat([x_t, eps]) if use_aux else x_t
    out = student.forward_raw(inputs, torch.cat([t, t]) if use_aux else t)
    out_xt, out_aux = out[:batch], out[batch:]
    eps_s = out_xt[:, :channels]
    zeros = torch.zeros(batch, device=x0.device)
    simple = mean_flat((eps - eps_s) ** 2)
    vb = zeros
    if cfg.vb and student.learned_variance:
        if table is None:
            raise ValueError("a learned-variance student needs the posterior table for L_vb")
        vb = vb_term(table, x0, x_t, t, eps_s.detach(), out_xt[:, channels:])
    distill, aux = zeros, zeros
    if use_distill or use_aux:
        teacher_in = [x_t] * use_distill + [eps] * use_aux
        # the teacher runs in its own dtype (fp16 on GPU), not in the student's bf16 autocast
        with torch.no_grad(), torch.autocast(x0.device.type, enabled=False):
            eps_t = teacher.predict_eps(torch.cat(teacher_in), t.repeat(len(teacher_in))).float()
        if use_distill:
            distill = mean_flat((eps_t[:batch] - eps_s) ** 2)
        if use_aux:
            aux = mean_flat((eps_t[-batch:] - out_aux[:, :channels]) ** 2)
    w_d = term_weight(cfg.weighting_distill, alphas_cumprod, t, cfg.gamma_distill, cfg.k)
    w_a = term_weight(cfg.weighting_aux, alphas_cumprod, t, cfg.gamma_aux, cfg.k)
    per_sample = cfg.simple * simple + vb
    if use_distill:
        per_sample = per_sample + cfg.lambda_distill * w_d * distill
    if use_aux:
        per_sample = per_sample + cfg.lambda_aux * w_a * aux
    return LossTerms(per_sample.mean(), simple, vb, distill, aux, w_d, w_a)
