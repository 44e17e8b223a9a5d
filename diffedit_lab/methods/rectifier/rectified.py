"""The rectified model ε_θ̂(x_t, t), θ̂ = θ·(1 + R(x₀, P_t[ε_θ(x_t)], t)), as a function and as a prior view.

P_t is the base (unmodulated) model's x₀ estimate (x_t − √(1−ᾱ_t) ε_θ(x_t)) / √ᾱ_t (paper Eq. 1), computed without
gradient; it is clamped to the image range [-1, 1] before the encoder (``clip_estimate``; at large t the raw
estimate is amplified by 1/√ᾱ_t ≈ 150 and would swamp the ResNet). :class:`RectifiedPrior` offers the samplers of
:mod:`diffedit_lab.diffusion.samplers` the same interface as the base prior (``predict_eps`` and the schedule), so
DDIM inversion and sampling run with the modulated model at every step; it is conditioned on the source images
``x0`` it was built for.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from diffedit_lab.models.rectifier import modulate, modulated_eps


class Rectified(NamedTuple):
    eps: torch.Tensor  # ε of the modulated model
    p_t: torch.Tensor  # the base model's x₀ estimate that conditioned R
    base_eps: torch.Tensor  # ε of the base model (what P_t came from)


def base_kernels(unet: nn.Module, net) -> dict[str, torch.Tensor]:
    """The frozen kernels θ of the layers ``net`` modulates (module name → weight)."""
    modules = dict(unet.named_modules())
    return {s.name: modules[s.name].weight for s in net.layers}


def rectified_eps(
    base,
    net,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    strategy: str = "grouped",
    clip_estimate: bool = True,
) -> Rectified:
    """One rectified prediction: base ε → P_t → Δ = R(x₀, P_t, t) → ε of θ·(1 + Δ)."""
    t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
    with torch.no_grad():
        base_eps = base.predict_eps(x_t, t)
        p_t = base.x0_from_eps(x_t, base_eps, t)
        if clip_estimate:
            p_t = p_t.clamp(-1, 1)
    # no name for R's output: modulate pops each Δ as it builds θ̂, so only θ̂ is alive during the U-Net forward
    weights = modulate(base_kernels(base.unet, net), net(x0, p_t, t))
    return Rectified(modulated_eps(base, x_t, t, weights, strategy), p_t, base_eps)


class RectifiedPrior:
    """The base prior seen through the Rectifier ``net`` for source images ``x0`` (what the samplers call)."""

    def __init__(self, base, net, x0: torch.Tensor, strategy: str = "grouped", clip_estimate: bool = True) -> None:
        self.base, self.net, self.x0 = base, net, x0
        self.strategy, self.clip_estimate = strategy, clip_estimate

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, **_: Any) -> torch.Tensor:
        return rectified_eps(self.base, self.net, self.x0, x_t, t, self.strategy, self.clip_estimate).eps

    # the schedule side is the base prior's
    @property
    def scheduler(self):
        return self.base.scheduler

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.base.alphas_cumprod

    @property
    def num_train_timesteps(self) -> int:
        return self.base.num_train_timesteps

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.base.add_noise(x0, eps, t)

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.base.x0_from_eps(x_t, eps, t)
