"""SDD — Selective Diffusion Distillation."""

from diffedit_lab.methods.sdd.module import SDDModule

__all__ = ["SDDModule"]
