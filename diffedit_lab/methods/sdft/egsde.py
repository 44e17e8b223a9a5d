"""EGSDE (Zhao et al., 2022) on top of SDEdit: after every denoising step the sample descends two energies.

* realism ``E_s(y, x, t) = cos(F(y, t), F(x_t, t))``: the cosine similarity (over channels, averaged over positions)
  of the domain classifier's last feature maps of the sample y and of the source image x noised to the same t —
  descending it discards source-specific features;
* faithfulness ``E_i(y, x, t) = ‖L(y) − L(x_t)‖²`` (summed per image), L the low-pass filter: average-pool by the
  downsampling factor (32 in SDFT), upsample back (bilinear) — it keeps the domain-independent content.

Update (EGSDE's defaults: λ_s = 500, λ_i = 2): ``y ← y − w·(λ_s ∇_y E_s + λ_i ∇_y E_i)``, with EGSDE's step weight
``w = β/√(1 − β)`` for the step's effective β = 1 − ᾱ_t/ᾱ_{t_prev} (one DDPM step: β_t/√α_t). EGSDE runs
ancestral DDPM steps; here the guidance rides on the project's DDIM SDEdit through ``step_callback``: it is applied
to the sample AFTER each step, at that step's noise level (the official code takes the gradient at the pre-step
sample and subtracts it from the step's mean), and not after the final step (the output is the clean image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffedit_lab.diffusion import schedule


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool by ``factor`` and upsample back to the input size (bilinear)."""
    down = F.avg_pool2d(x, factor)
    return F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)


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


class EGSDEGuidance:
    """The ``step_callback`` of :func:`~diffedit_lab.diffusion.samplers.sdedit` that applies the energy step.

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
