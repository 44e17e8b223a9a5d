"""The tiny ArcFace of tests and the demo (``identity=tiny``): the IR-SE structure and loading code of the real
encoder (:mod:`diffedit_lab.models.identity`) with a few units and channels."""

from __future__ import annotations

import os

import torch

from diffedit_lab.models.identity import IdentityEncoder, IRSEConfig
from diffedit_lab.testing._seed import seeded

IRSE_TINY = IRSEConfig(units=(1, 2, 1, 1), widths=(16, 32, 48, 64), embedding_dim=32)


def tiny_identity(
    weights_path: str | os.PathLike | None = None,
    enabled: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> IdentityEncoder | None:
    """A tiny :class:`IdentityEncoder` (32-d embeddings), random from ``seed`` (the global RNG is left alone) or
    loaded from ``weights_path`` (a saved tiny backbone state_dict); ``None`` when not ``enabled``."""
    if not enabled:
        return None
    with seeded(seed):
        encoder = IdentityEncoder(weights_path, config=IRSE_TINY)
    return encoder if device is None else encoder.to(device)
