"""The Rectifier's two training objectives (paper 003, Eq. 3 and Eq. 6 / Algorithm 1).

* reconstruction: ‖ε − ε_θ̂(x_t, t)‖² (mean over elements), x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε — the DDPM noise-fitting
  loss, with θ̂ = θ·(1 + R(x₀, P_t, t));
* editing (Algorithm 1): x_t is built from the ORIGINAL image x₀ with fresh noise at every step (the forward
  trajectory, as in denoising score matching) — never from a previous edited step as in DiffusionCLIP's Markovian
  training. The editor modulates the U-Net, P̃_t = P_t[ε_θ̃(x_t)] is its x₀ estimate, and the loss is
  λ_clip·(1 − cos(E_I(P̃_t) − E_I(x₀), E_T(target) − E_T(source))) + λ_l1·mean|P̃_t − x₀|.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from diffedit_lab.methods.rectifier.rectified import rectified_eps


class FitTerms(NamedTuple):
    loss: torch.Tensor
    base_mse: torch.Tensor  # the plain model's ‖ε − ε_θ‖² on the same x_t (what the rectifier should beat)


class EditTerms(NamedTuple):
    loss: torch.Tensor
    clip: torch.Tensor  # directional CLIP loss (0 when λ_clip = 0)
    l1: torch.Tensor
    x_t: torch.Tensor  # the input of this step: √ᾱ_t x₀ + √(1−ᾱ_t) ε
    edited: torch.Tensor  # P̃_t


def fit_loss(base, net, x0, t, eps, strategy: str = "grouped", clip_estimate: bool = True) -> FitTerms:
    x_t = base.add_noise(x0, eps, t)
    out = rectified_eps(base, net, x0, x_t, t, strategy, clip_estimate)
    return FitTerms(F.mse_loss(out.eps, eps), F.mse_loss(out.base_eps, eps).detach())


def edit_loss(
    base,
    editor,
    clip,
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    source_text: str,
    target_text: str,
    lambda_clip: float = 1.0,
    lambda_l1: float = 1.0,
    strategy: str = "grouped",
    clip_estimate: bool = True,
) -> EditTerms:
    """One step of Algorithm 1 on a batch of training images ``x0`` at timesteps ``t`` with noise ``eps``."""
    x_t = base.add_noise(x0, eps, t)  # the original trajectory: from x₀ itself, whatever was edited before
    out = rectified_eps(base, editor, x0, x_t, t, strategy, clip_estimate)
    edited = base.x0_from_eps(x_t, out.eps, t)
    zero = edited.new_zeros(())
    direction = clip.directional_loss(x0, edited, source_text, target_text) if lambda_clip > 0 else zero
    l1 = (edited - x0).abs().mean()
    return EditTerms(lambda_clip * direction + lambda_l1 * l1, direction.detach(), l1.detach(), x_t, edited)


def draw_timesteps(n: int, num_train_timesteps: int, generator: torch.Generator, grid: torch.Tensor | None = None):
    """t ~ U{0..T−1} (diffusers' indexing of the paper's U{1..T}), or uniform over the timesteps of ``grid``."""
    if grid is None:
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    return grid[torch.randint(0, len(grid), (n,), generator=generator)].long()
