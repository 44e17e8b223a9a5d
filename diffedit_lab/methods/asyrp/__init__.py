"""Asyrp — text-guided editing in the h-space (U-Net bottleneck) of a frozen unconditional diffusion model."""

from diffedit_lab.methods.asyrp.module import AsyrpModule

__all__ = ["AsyrpModule"]
