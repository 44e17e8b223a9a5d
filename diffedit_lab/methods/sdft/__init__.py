"""SDFT — Self-Distillation Fine-Tuning of a pretrained diffusion model on limited data."""

from diffedit_lab.methods.sdft.module import SDFTModule

__all__ = ["SDFTModule"]
