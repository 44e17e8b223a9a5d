"""StyleCLIP's levels mapper on W+ codes — SDD's image manipulator.

Three groups of W+ layers (coarse 0–3, medium 4–7, fine 8+) each get their own MLP: ``PixelNorm`` then
``num_layers`` equalised-LR linear layers (lr multiplier 0.01, leaky ReLU). ``PixelNorm`` is applied to the
(B, layers, dim) slice with ``dim=1`` — i.e. across the *layer* axis, exactly as the StyleCLIP / SDD reference code
does (its PixelNorm was written for (B, dim) vectors and reused unchanged on W+ slices). A disabled group outputs
zeros, so its layers stay untouched by the edit ``w' = w + edit_scale · mapper(w)``.
"""

from __future__ import annotations

import torch
from torch import nn

from diffedit_lab.models.stylegan2.ops import EqualLinear, PixelNorm
from diffedit_lab.utils.errors import UserError

GROUPS = ("coarse", "medium", "fine")


class GroupMapper(nn.Module):
    """PixelNorm over the layer axis of a (B, layers, dim) slice, then an MLP applied to every layer's code."""

    def __init__(self, dim: int, num_layers: int = 4, lr_mul: float = 0.01):
        super().__init__()
        self.norm = PixelNorm()
        self.layers = nn.Sequential(
            *[EqualLinear(dim, dim, lr_mul=lr_mul, activation="fused_lrelu") for _ in range(num_layers)]
        )

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.norm(w)  # dim=1: the layer axis, as in the reference
        return self.layers(x.reshape(-1, x.shape[-1])).view_as(x)


class LevelsMapper(nn.Module):
    """``forward(w) -> Δ`` of the same shape (B, n_latent, dim); ``edit(w) = w + edit_scale · Δ``."""

    def __init__(
        self,
        dim: int = 512,
        levels: dict[str, bool] | None = None,
        num_layers: int = 4,
        lr_mul: float = 0.01,
        edit_scale: float = 0.1,
        coarse_end: int = 4,
        medium_end: int = 8,
    ):
        super().__init__()
        levels = dict({"coarse": True, "medium": True, "fine": True} if levels is None else levels)
        unknown = set(levels) - set(GROUPS)
        if unknown:
            raise UserError(f"unknown mapper level(s) {sorted(unknown)}; use {list(GROUPS)}")
        if not any(levels.get(g, False) for g in GROUPS):
            raise UserError("mapper levels: enable at least one of coarse/medium/fine")
        self.levels = {g: bool(levels.get(g, False)) for g in GROUPS}
        self.bounds = {"coarse": (0, coarse_end), "medium": (coarse_end, medium_end), "fine": (medium_end, None)}
        self.edit_scale = float(edit_scale)
        self.mappers = nn.ModuleDict({g: GroupMapper(dim, num_layers, lr_mul) for g in GROUPS if self.levels[g]})

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        parts = []
        for g in GROUPS:
            lo, hi = self.bounds[g]
            chunk = w[:, lo:hi]
            parts.append(self.mappers[g](chunk) if self.levels[g] else torch.zeros_like(chunk))
        return torch.cat(parts, dim=1)

    def edit(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.edit_scale * self(w)
