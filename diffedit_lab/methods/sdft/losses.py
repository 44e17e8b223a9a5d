"""SDFT's training loss (Hur et al., paper 002): the diffusion loss of the student plus self-distillation from the
frozen source model on the noisy input x_t and on the pure-noise auxiliary input ε.

Per sample, with t ~ U{0..T−1}, ε ~ N(0, I) and x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε:

    L = L_simple + L_vb (learned σ only) + λ·w_γ(t)·‖ε_T(x_t,t) − ε_S(x_t,t)‖² + λ'·w_γ'(t)·‖ε_T(ε,t) − ε_S(ε,t)‖²

``‖·‖²`` is the mean over pixels and channels (``mean_flat``, as the guided-diffusion code base SDFT builds on).
``L_vb`` is improved DDPM's variational term for the ``learned_range`` variance parameterisation with the mean
stopped (the ε prediction is detached, so L_vb trains only the variance channels): the KL between the true
posterior q(x_{t−1} | x_t, x₀) and the model's Gaussian, in bits per dimension, and at t = 0 the discretised
Gaussian decoder NLL. Only the ε channels are distilled. x_t and ε go through the student (one graph, one backward)
and through the teacher (no grad) either in one batched call each on [x_t; ε] or in two calls each
(``loss.student_batching``: ``joint``, the default, | ``separate``); the loss and its gradients are the same either
way (to float rounding; dropout masks, when the network has dropout, are drawn in a different order). Joint was
measured no slower on the CPU at real size (``experiments/bench``: equal with the process keeping its freed memory,
faster on a contended machine) and is the usual choice on a GPU (one launch sequence for both inputs).

Numerics follow the official code (JiwanHur/SDFT on guided-diffusion's ``gaussian_diffusion.py``/``losses.py``):
every schedule table (x_t, the x₀ estimate, the posterior) is computed in float64 from float64 betas and cast to
float32, and the decoder NLL uses guided-diffusion's tanh approximation of the normal CDF
(``loss.decoder_cdf: approx``; ``exact`` uses Φ itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffedit_lab.diffusion import schedule
from diffedit_lab.methods.sdft.config import DecoderCDF, LossConfig


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


class PosteriorTable:
    """guided-diffusion's per-timestep tables of the forward process q(x_t | x₀) and the posterior
    q(x_{t−1} | x_t, x₀): computed in float64 from the betas and cast to float32 at the end, as ``GaussianDiffusion``
    does with numpy. The posterior log-variance is clipped at t = 0 to β̃_1. Build it with :meth:`from_scheduler`
    (float64 betas from the scheduler's config; diffusers' own betas are float32)."""

    def __init__(self, betas: torch.Tensor) -> None:
        b = betas.detach().cpu().double()
        ab = torch.cumprod(1.0 - b, 0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        var = b * (1.0 - ab_prev) / (1.0 - ab)
        self.alphas_cumprod = ab.float()
        self.sqrt_alphas_cumprod = ab.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ab).sqrt().float()
        self.sqrt_recip_alphas_cumprod = (1.0 / ab).sqrt().float()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ab - 1.0).sqrt().float()
        self.posterior_variance = var.float()
        self.log_var_clipped = torch.cat([var[1:2], var[1:]]).log().float()
        self.log_beta = b.log().float()
        self.coef_x0 = (b * ab_prev.sqrt() / (1.0 - ab)).float()
        self.coef_xt = ((1.0 - ab_prev) * (1.0 - b).sqrt() / (1.0 - ab)).float()

    @classmethod
    def from_scheduler(cls, scheduler) -> PosteriorTable:
        """The tables of a diffusers scheduler's schedule, from its betas recomputed in float64."""
        return cls(schedule.betas_float64(scheduler))

    def on(self, name: str, device: torch.device) -> torch.Tensor:
        """Table ``name`` on ``device``, copied there once (not once per lookup: on a GPU each copy of a host
        tensor is a synchronous transfer, ~10 per loss)."""
        cache = self.__dict__.setdefault("_on_device", {})
        key = (name, device)
        if key not in cache:
            cache[key] = getattr(self, name).to(device)
        return cache[key]

    def gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return schedule.expand_like(self.on(name, t.device)[t.long()], like)

    def q_sample(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε."""
        return (
            self.gather("sqrt_alphas_cumprod", t, x0) * x0 + self.gather("sqrt_one_minus_alphas_cumprod", t, x0) * eps
        )

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂₀ = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂."""
        return (
            self.gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self.gather("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.gather("coef_x0", t, x_t) * x0 + self.gather("coef_xt", t, x_t) * x_t


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """guided-diffusion's tanh approximation of the standard normal CDF, ½(1 + tanh(√(2/π)(x + 0.044715x³)))
    (off from Φ by at most ~2e-4)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


CDFS = {"approx": approx_standard_normal_cdf, "exact": torch.special.ndtr}


def discretized_gaussian_nll(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, *, cdf: DecoderCDF
) -> torch.Tensor:
    """−log P(x) for images x ∈ [−1, 1] quantised to 256 bins of width 2/255 under N(mean, e^{2·log_scale});
    the edge bins (x < −0.999, x > 0.999) extend to ±∞, each log clamped at 1e-12. Elementwise, in nats. ``cdf``:
    ``approx`` (guided-diffusion's tanh formula) or ``exact`` (Φ)."""
    phi = CDFS[cdf]
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    upper = phi(inv_std * (centered + 1.0 / 255))
    lower = phi(inv_std * (centered - 1.0 / 255))
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
    *,
    cdf: DecoderCDF,
) -> torch.Tensor:
    """Improved DDPM's L_vb per sample (bits/dim) for ``learned_range`` variance outputs ``var_out`` ∈ [−1, 1]:
    log σ² = f·log β_t + (1−f)·log β̃_t with f = (v+1)/2. The mean comes from ``eps`` — pass it detached. ``cdf``
    is the normal CDF of the decoder NLL at t = 0 (:func:`discretized_gaussian_nll`)."""
    frac = (var_out + 1.0) / 2.0
    log_var = frac * table.gather("log_beta", t, x_t) + (1.0 - frac) * table.gather("log_var_clipped", t, x_t)
    model_mean = table.mean(table.x0_from_eps(x_t, eps, t), x_t, t)
    true_mean = table.mean(x0, x_t, t)
    true_log_var = table.gather("log_var_clipped", t, x_t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, log_var)) / math.log(2.0)
    nll = mean_flat(discretized_gaussian_nll(x0, model_mean, 0.5 * log_var, cdf=cdf)) / math.log(2.0)
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
    be None when λ = λ' = 0. ``table`` (:meth:`PosteriorTable.from_scheduler` of the student's scheduler) is needed
    for learned σ; when given, x_t comes from its float64-built √ᾱ_t, √(1−ᾱ_t) too."""
    batch, channels = x0.shape[0], student.in_channels
    alphas_cumprod = student.alphas_cumprod
    # the float64-built table when given (as guided-diffusion's q_sample); else the prior's float32 ᾱ
    x_t = table.q_sample(x0, eps, t) if table is not None else schedule.add_noise(x0, eps, alphas_cumprod, t)
    use_distill, use_aux = cfg.lambda_distill > 0, cfg.lambda_aux > 0
    joint = cfg.student_batching == "joint"
    # the student on x_t and on the auxiliary input (exactly the noise ε, at the same t): one call on [x_t; ε]
    # (joint) or two calls (separate); either way one graph, one backward
    if use_aux and joint:
        out = student.forward_raw(torch.cat([x_t, eps]), torch.cat([t, t]))
        out_xt, out_aux = out[:batch], out[batch:]
    else:
        out_xt = student.forward_raw(x_t, t)
        out_aux = student.forward_raw(eps, t) if use_aux else None
    eps_s = out_xt[:, :channels]
    zeros = torch.zeros(batch, device=x0.device)
    simple = mean_flat((eps - eps_s) ** 2)
    vb = zeros
    if cfg.vb and student.learned_variance:
        if table is None:
            raise ValueError("a learned-variance student needs the posterior table for L_vb")
        vb = vb_term(table, x0, x_t, t, eps_s.detach(), out_xt[:, channels:], cdf=cfg.decoder_cdf)
    distill, aux = zeros, zeros
    if use_distill or use_aux:
        teacher_in = [x_t] * use_distill + [eps] * use_aux
        # the teacher runs in its own dtype (fp16 on GPU), not in the student's bf16 autocast
        with torch.no_grad(), torch.autocast(x0.device.type, enabled=False):
            if joint:
                eps_t = teacher.predict_eps(torch.cat(teacher_in), t.repeat(len(teacher_in))).float().split(batch)
            else:
                eps_t = [teacher.predict_eps(x, t).float() for x in teacher_in]
        if use_distill:
            distill = mean_flat((eps_t[0] - eps_s) ** 2)
        if use_aux:
            aux = mean_flat((eps_t[-1] - out_aux[:, :channels]) ** 2)
    w_d = term_weight(cfg.weighting_distill, alphas_cumprod, t, cfg.gamma_distill, cfg.k)
    w_a = term_weight(cfg.weighting_aux, alphas_cumprod, t, cfg.gamma_aux, cfg.k)
    per_sample = cfg.simple * simple + vb
    if use_distill:
        per_sample = per_sample + cfg.lambda_distill * w_d * distill
    if use_aux:
        per_sample = per_sample + cfg.lambda_aux * w_a * aux
    return LossTerms(per_sample.mean(), simple, vb, distill, aux, w_d, w_a)
