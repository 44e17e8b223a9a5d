"""Samplers over diffusers schedulers: DDIM sampling and inversion, DDPM ancestral sampling, SDEdit.

They work in the prior's *model space* (pixels for ``UnconditionalPrior``, VAE latents for SD) and call
``prior.predict_eps(x, t, **cond)``, so the same loop serves every prior. ``cond`` carries what a conditional prior
needs (``cond``/``uncond`` embeddings and ``guidance_scale``).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from diffedit_lab.utils.errors import UserError


def _scheduler(prior, kind: str, num_steps: int, clip_sample: bool | None = None):
    from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

    cls = {"ddim": DDIMScheduler, "ddim_inverse": DDIMInverseScheduler, "ddpm": DDPMScheduler}[kind]
    if not 1 <= num_steps <= prior.num_train_timesteps:
        raise UserError(f"num_steps must be in [1, {prior.num_train_timesteps}], got {num_steps}")
    overrides = {} if clip_sample is None else {"clip_sample": clip_sample}
    sched = cls.from_config(prior.scheduler.config, **overrides)
    sched.set_timesteps(num_steps, device=prior.alphas_cumprod.device)
    return sched


def _bar(iterable, progress: bool, desc: str):
    return tqdm(iterable, desc=desc, leave=False, disable=not progress)


@torch.no_grad()
def ddim_sample(
    prior,
    x_t: torch.Tensor,
    num_steps: int = 50,
    eta: float = 0.0,
    start_step: int = 0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond: dict[str, Any] | None = None,
    clip_sample: bool | None = None,
) -> torch.Tensor:
    """Run DDIM from ``x_t`` (noise at ``timesteps[start_step]``) down to x₀; η = 0 is deterministic."""
    sched = _scheduler(prior, "ddim", num_steps, clip_sample)
    x = x_t
    for t in _bar(sched.timesteps[start_step:], progress, "ddim"):
        eps = prior.predict_eps(x, t, **(cond or {}))
        x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return x


@torch.no_grad()
def ddim_invert(
    prior,
    x0: torch.Tensor,
    num_steps: int = 50,
    end_step: int | None = None,
    progress: bool = False,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM inversion x₀ → x_T (or to ``timesteps[end_step]`` of the matching DDIM schedule).

    Pairs with :func:`ddim_sample` over the same ``num_steps``: inverting ``k`` steps and then sampling from
    ``start_step = num_steps − k`` retraces the same timesteps. x₀-clipping is always off here (it would make
    the map non-invertible); pass ``clip_sample=False`` to :func:`ddim_sample` for an exact round trip.
    """
    sched = _scheduler(prior, "ddim_inverse", num_steps, clip_sample=False)
    steps = sched.timesteps if end_step is None else sched.timesteps[:end_step]
    x = x0
    for t in _bar(steps, progress, "ddim-inversion"):
        eps = prior.predict_eps(x, t, **(cond or {}))
        x = sched.step(eps, t, x).prev_sample
    return x


@torch.no_grad()
def ddpm_sample(
    prior,
    x_t: torch.Tensor,
    num_steps: int = 1000,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling (learned variance is ignored: the scheduler's fixed-small variance is used)."""
    sched = _scheduler(prior, "ddpm", num_steps)
    x = x_t
    for t in _bar(sched.timesteps, progress, "ddpm"):
        eps = prior.predict_eps(x, t, **(cond or {}))
        x = sched.step(eps, t, x, generator=generator).prev_sample
    return x


@torch.no_grad()
def sdedit(
    prior,
    x0: torch.Tensor,
    strength: float = 0.5,
    num_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:
    """SDEdit (Meng et al.): noise x₀ to the point ``strength`` ∈ (0, 1] of the DDIM schedule, then denoise.

    ``strength = 0.5`` with 40 steps starts at the middle of the 40-step schedule (SDFT's translation setting).
    """
    if not 0.0 < strength <= 1.0:
        raise UserError(f"sdedit strength must be in (0, 1], got {strength}")
    sched = _scheduler(prior, "ddim", num_steps)
    n_run = max(1, round(num_steps * strength))
    start = num_steps - n_run
    t_start = sched.timesteps[start]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = prior.add_noise(x0, noise, t_start.expand(x0.shape[0]))
    return ddim_sample(
        prior, x_t, num_steps=num_steps, eta=eta, start_step=start, generator=generator, progress=progress, cond=cond
    )
