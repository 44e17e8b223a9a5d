"""diffedit_lab: diffusion-based image editing methods (SDD, SDFT, Rectifier) in Lightning + Hydra."""

__version__ = "0.1.0"
