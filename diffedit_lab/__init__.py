"""diffedit_lab: diffusion-based image editing methods (SDD, SDFT, Rectifier) in Lightning + Hydra."""

__version__ = "0.1.0"

from diffedit_lab.utils import resolvers as _resolvers  # noqa: E402,F401  (config resolvers, before Hydra composes)
