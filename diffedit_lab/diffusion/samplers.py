"""Samplers over diffusers schedulers: DDIM sampling and inversion, DDPM ancestral sampling, SDEdit.

They work in the prior's *model space* (pixels for ``UnconditionalPrior``, VAE latents for SD) and call
``prior.predict_eps(x, t, **cond)``, so the same loop serves every prior. ``cond`` carries what a conditional prior
needs (``cond``/``uncond`` embeddings and ``guidance_scale``) or any other keyword of the prior's ``predict_eps``
(e.g. ``params`` of :meth:`UnconditionalPrior.predict_eps`, to sample with substituted U-Net weights).

Every sampler takes an optional ``step_callback(i, t, x)``, called after each step with the step's index ``i``
(0, 1, … over the steps this call runs), the timestep ``t`` whose ε was just used (a 0-d tensor) and the new sample
``x``; a returned tensor replaces the sample, ``None`` keeps it. This is where per-step guidance goes (EGSDE's
energy terms: ``x − s·∇E(x)``), or recording a trajectory. The loop runs under ``torch.no_grad()``: a hook that
needs gradients wraps its body in ``torch.enable_grad()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]


def _bar(iterable, progress: bool, desc: str):
    return tqdm(iterable, desc=desc, leave=False, disable=not progress)


def _loop(
    prior,
    sched,
    timesteps: Iterable[torch.Tensor],
    x: torch.Tensor,
    cond: dict[str, Any] | None,
    step_callback: StepCallback | None,
    progress: bool,
    desc: str,
    **step_kwargs: Any,
) -> torch.Tensor:
    """ε̂ → ``sched.step`` → optional hook, for each timestep."""
    for i, t in enumerate(_bar(timesteps, progress, desc)):
        eps = prior.predict_eps(x, t, **(cond or {}))
        x = sched.step(eps, t, x, **step_kwargs).prev_sample
        if step_callback is not None:
            out = step_callback(i, t, x)
            if out is not None:
                x = out
    return x


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
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM from ``x_t`` (noise at ``timesteps[start_step]``) down to x₀; η = 0 is deterministic.
    ``step_callback(i, t, x)`` runs after each step (module docstring)."""
    sched = _scheduler(prior, "ddim", num_steps, clip_sample)
    steps = sched.timesteps[start_step:]
    return _loop(prior, sched, steps, x_t, cond, step_callback, progress, "ddim", eta=eta, generator=generator)


@torch.no_grad()
def ddim_invert(
    prior,
    x0: torch.Tensor,
    num_steps: int = 50,
    end_step: int | None = None,
    progress: bool = False,
    cond: dict[str, Any] | None = None,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Deterministic DDIM inversion x₀ → x_T (or to ``timesteps[end_step]`` of the matching DDIM schedule).

    Pairs with :func:`ddim_sample` over the same ``num_steps``: inverting ``k`` steps and then sampling from
    ``start_step = num_steps − k`` retraces the same timesteps. x₀-clipping is always off here (it would make
    the map non-invertible); pass ``clip_sample=False`` to :func:`ddim_sample` for an exact round trip.
    ``step_callback(i, t, x)`` runs after each (noising) step, ``x`` being the sample one step noisier.
    """
    sched = _scheduler(prior, "ddim_inverse", num_steps, clip_sample=False)
    steps = sched.timesteps if end_step is None else sched.timesteps[:end_step]
    return _loop(prior, sched, steps, x0, cond, step_callback, progress, "ddim-inversion")


@torch.no_grad()
def ddpm_sample(
    prior,
    x_t: torch.Tensor,
    num_steps: int = 1000,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond: dict[str, Any] | None = None,
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling (learned variance is ignored: the scheduler's fixed-small variance is used).
    ``step_callback(i, t, x)`` runs after each step (module docstring)."""
    sched = _scheduler(prior, "ddpm", num_steps)
    return _loop(prior, sched, sched.timesteps, x_t, cond, step_callback, progress, "ddpm", generator=generator)


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
    step_callback: StepCallback | None = None,
) -> torch.Tensor:
    """SDEdit (Meng et al.): noise x₀ to the point ``strength`` ∈ (0, 1] of the DDIM schedule, then denoise.

    ``strength = 0.5`` with 40 steps starts at the middle of the 40-step schedule (SDFT's translation setting).
    ``step_callback(i, t, x)`` runs after each denoising step (``i`` from 0): EGSDE is SDEdit with a hook that
    descends its realism and faithfulness energies.
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
        prior,
        x_t,
        num_steps=num_steps,
        eta=eta,
        start_step=start,
        generator=generator,
        progress=progress,
        cond=cond,
        step_callback=step_callback,
    )
