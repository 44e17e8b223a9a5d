"""Rectifier — high-fidelity diffusion editing with a weight-modulating hypernetwork (Hou et al., paper 003)."""

from diffedit_lab.methods.rectifier.module import RectifierModule

__all__ = ["RectifierModule"]
