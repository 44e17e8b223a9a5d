"""EGSDE (Zhao et al., 2022): SDEdit whose reverse steps are guided by two energies.

* realism ``E_s(y, x, t) = cos(F(y, t), F(x_t, t))``: the cosine similarity (over channels, averaged over positions)
  of the domain classifier's last feature maps of the sample y and of the source image x noised to the same t —
  descending it discards source-specific features;
* faithfulness ``E_i(y, x, t) = ‖L(y) − L(x_t)‖²`` (summed per image), L the low-pass filter of EGSDE's code:
  downsample by the factor (32 in EGSDE and SDFT) with an antialiased linear (triangle) kernel, mirrored at the
  borders, then upsample back linearly — it keeps the domain-independent content.

Two forms (``method.egsde.form``):

* ``official`` — EGSDE's own sampler (``ML-GSAI/EGSDE``, ``runners/egsde.py`` + ``functions/denoising.py``): noise
  the source x₀ with ONE noise ε to the start timestep t₀ (SDEdit's start point), then ancestral DDPM steps

      y ← (y − β_t/√(1−ᾱ_t)·ε̂(y, t))/√α_t − β_t/√α_t·(λ_s ∇_y E_s + λ_i ∇_y E_i) + σ_t z,

  the gradients taken at the PRE-step sample y against x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (the same ε as the start point
  at every step), σ_t² the posterior ("fixedsmall") variance β_t(1−ᾱ_{t−1})/(1−ᾱ_t), no noise after the last
  step (the guidance still applies there), no x₀ clipping, learned σ ignored. ``repeats`` runs it again from its
  own output (EGSDE's ``sample_step``; x₀ stays the source). On a respaced schedule (``num_steps`` < T) β_t, α_t
  are the respaced step's: β = 1 − ᾱ_t/ᾱ_prev. EGSDE's code runs every timestep (T = 1000, t₀ = 500);
* ``ddim_post_step`` — the project's earlier adaptation on DDIM SDEdit (:class:`EGSDEGuidance`): after each DDIM
  step the sample descends the energies at the new noise level, weight β/√(1−β) of the step, not after the last.

Both use the same energies. SDFT's notebooks ran a third variant (``JiwanHur/SDFT``,
``guided_diffusion/gaussian_diffusion.py``, ``ddim_sample_loop_progressive(egsde_kwargs=…)``): η = 0 DDIM over 40
steps, the pre-step gradient subtracted from the DDIM output, x_t redrawn each step, no guidance on the last step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffedit_lab.diffusion import schedule
from diffedit_lab.utils.errors import UserError


def _resize_matrix(n_in: int, factor: int, device, dtype) -> torch.Tensor:
    """(n_in/factor, n_in) weights of EGSDE's antialiased linear downsampling along one axis: output pixel j is
    centred at input position (j + ½)·factor − ½ and averages with a triangle of half-width ``factor``; positions
    outside the image reflect (−1 → 0, n → n − 1); each row is normalised before reflecting."""
    n_out = n_in // factor
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * factor - 0.5
    idx = centres.floor()[:, None].long() + torch.arange(-factor - 1, factor + 2)[None]
    w = (1.0 - (centres[:, None] - idx).abs() / factor).clamp(min=0.0)
    w = w / w.sum(dim=1, keepdim=True)
    idx = idx.remainder(2 * n_in)
    idx = torch.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
    out = torch.zeros(n_out, n_in, dtype=torch.float64).scatter_add_(1, idx, w)
    return out.to(device=device, dtype=dtype)


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Downsample by ``factor`` (antialiased linear kernel, :func:`_resize_matrix`) and upsample back to the input
    size (linear, half-pixel centres): EGSDE's ``up(down(x))``. ``factor`` 1 is the identity."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    rows = _resize_matrix(h, factor, x.device, x.dtype)
    cols = _resize_matrix(w, factor, x.device, x.dtype)
    down = torch.einsum("oh,...hw,pw->...op", rows, x, cols)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)


def cosine_energy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: cosine similarity of feature vectors (channel axis) at each position, averaged over positions."""
    return (F.normalize(a.flatten(2), dim=1, eps=1e-10) * F.normalize(b.flatten(2), dim=1, eps=1e-10)).sum(1).mean(1)


def faithfulness_energy(y: torch.Tensor, x_t: torch.Tensor, factor: int) -> torch.Tensor:
    return (low_pass(y, factor) - low_pass(x_t, factor)).square().sum(dim=(1, 2, 3))


def energy_grad(
    y: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, features, realism: float, faith: float, factor: int
):
    """λ_s ∇_y E_s + λ_i ∇_y E_i (``features(x, t)`` → feature maps; None skips the realism term)."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        energy = faith * faithfulness_energy(y, x_t, factor)
        if features is not None and realism:
            with torch.no_grad():
                ref = features(x_t, t)
            energy = energy + realism * cosine_energy(features(y, t), ref)
        return torch.autograd.grad(energy.sum(), y)[0]


# --- official form ------------------------------------------------------------------------------------------
def official_step(
    prior,
    y: torch.Tensor,
    t: int,
    t_prev: int,
    source_t: torch.Tensor,
    features,
    realism: float,
    faith: float,
    factor: int,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """One EGSDE step y_t → y_{t_prev} (``t_prev`` −1: the last step): the DDPM posterior mean of the ε-prediction,
    shifted by −β/√α·(λ_s∇E_s + λ_i∇E_i) taken at ``y`` against ``source_t`` (the source noised to t), plus
    σ·``z`` (σ² = β(1 − ᾱ_prev)/(1 − ᾱ_t); ``z`` None adds nothing)."""
    ab_t = float(prior.alphas_cumprod[t])
    ab_prev = float(prior.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    alpha = ab_t / ab_prev
    beta = 1.0 - alpha
    eps = prior.predict_eps(y, t)
    out = (y - beta / (1.0 - ab_t) ** 0.5 * eps) / alpha**0.5
    if realism or faith:
        level = torch.full((y.shape[0],), t, device=y.device, dtype=torch.long)
        out = out - beta / alpha**0.5 * energy_grad(y, source_t, level, features, realism, faith, factor)
    if z is not None:
        out = out + (beta * (1.0 - ab_prev) / (1.0 - ab_t)) ** 0.5 * z
    return out


def schedule_timesteps(prior, num_steps: int) -> list[int]:
    """The ``num_steps`` timesteps of the prior's DDIM schedule (SDEdit's; T steps = every timestep)."""
    from diffusers import DDIMScheduler

    if not 1 <= num_steps <= prior.num_train_timesteps:
        raise UserError(f"EGSDE num_steps must be in [1, {prior.num_train_timesteps}], got {num_steps}")
    sched = DDIMScheduler.from_config(prior.scheduler.config)
    sched.set_timesteps(num_steps)
    return [int(t) for t in sched.timesteps]


@torch.no_grad()
def egsde_sample(
    prior,
    x0: torch.Tensor,
    features,
    realism: float,
    faith: float,
    factor: int,
    strength: float = 0.5,
    num_steps: int = 40,
    repeats: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EGSDE's official sampler (module docstring) from the point ``strength`` of the ``num_steps``-step schedule
    (SDEdit's start: the last ``round(num_steps·strength)`` timesteps run). Draws from ``generator``: per repeat
    the noise ε, then one z per step but the last."""
    if not 0.0 < strength <= 1.0:
        raise UserError(f"EGSDE strength must be in (0, 1], got {strength}")
    timesteps = schedule_timesteps(prior, num_steps)
    run = timesteps[num_steps - max(1, round(num_steps * strength)) :]
    batch = x0.shape[0]

    def randn() -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    y = x0
    for _ in range(repeats):
        noise = randn()
        y = schedule.add_noise(y, noise, prior.alphas_cumprod, torch.full((batch,), run[0], device=x0.device))
        for k, t in enumerate(run):
            t_prev = run[k + 1] if k + 1 < len(run) else -1
            source_t = schedule.add_noise(x0, noise, prior.alphas_cumprod, torch.full((batch,), t, device=x0.device))
            z = randn() if t_prev >= 0 else None
            y = official_step(prior, y, t, t_prev, source_t, features, realism, faith, factor, z)
    return y


# --- ddim_post_step form ------------------------------------------------------------------------------------
class EGSDEGuidance:
    """The ``step_callback`` of :func:`~diffedit_lab.diffusion.samplers.sdedit` that applies the energy step after
    each DDIM step (``form=ddim_post_step``).

    ``source``: the clean source images; ``noise``: the fixed noise that brings them to each step's level."""

    def __init__(self, prior, source, noise, num_steps: int, features, realism: float, faith: float, factor: int):
        self.alphas_cumprod = prior.alphas_cumprod
        self.stride = prior.num_train_timesteps // num_steps
        self.source, self.noise, self.features = source, noise, features
        self.realism, self.faith, self.factor = realism, faith, factor

    def step_weight(self, t: int) -> float:
        """β/√(1−β) for the DDIM step t → t − stride (EGSDE's β_t/√α_t for a single DDPM step)."""
        ab_t = float(self.alphas_cumprod[t])
        ab_prev = float(self.alphas_cumprod[t - self.stride]) if t - self.stride >= 0 else 1.0
        alpha = ab_t / ab_prev
        return (1.0 - alpha) / alpha**0.5

    def __call__(self, i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        t_prev = int(t) - self.stride  # x is now at the level of the next timestep
        if t_prev < 0:
            return None  # x is the final image
        level = torch.full((x.shape[0],), t_prev, device=x.device, dtype=torch.long)
        x_src = schedule.add_noise(self.source, self.noise, self.alphas_cumprod, level)
        grad = energy_grad(x, x_src, level, self.features, self.realism, self.faith, self.factor)
        return x - self.step_weight(int(t)) * grad
