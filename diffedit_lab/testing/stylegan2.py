"""Randomly initialised StyleGAN2 generators: the tiny one of tests and the demo (``generator=tiny``) and
the generic ``random_generator`` (any shape; production code in :mod:`diffedit_lab.models.stylegan2`, re-exported
here). Same class and checkpoint code as pretrained generators, only the weights are random."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from diffedit_lab.models.stylegan2 import StyleGAN2Generator, load_generator, random_generator

__all__ = ["TINY_CHANNELS", "random_generator", "tiny_channels", "tiny_generator"]

# A few channels per resolution: a 32-64 px generator that runs in milliseconds on CPU.
TINY_CHANNELS: dict[int, int] = {4: 16, 8: 16, 16: 16, 32: 8, 64: 8, 128: 8, 256: 8, 512: 8, 1024: 8}


def tiny_channels() -> dict[int, int]:
    """A fresh copy of :data:`TINY_CHANNELS` (resolution → feature channels)."""
    return dict(TINY_CHANNELS)


def tiny_generator(
    size: int = 32,
    style_dim: int = 32,
    n_mlp: int = 2,
    channel_multiplier: int = 1,
    seed: int = 0,
    crop: Sequence[int] | None = None,
    checkpoint: str | os.PathLike | None = None,
    key: str = "g_ema",
    device: torch.device | str | None = None,
) -> StyleGAN2Generator:
    """The tiny generator (:data:`TINY_CHANNELS`; 32 px, style 32, 2 mapping layers by default), random from
    ``seed`` -- or, with ``checkpoint``, a saved tiny generator loaded back through the rosinality loader."""
    if checkpoint is not None:
        gen = load_generator(
            checkpoint,
            size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            key=key,
            channels=tiny_channels(),
            crop=crop,
        ).eval()
        return gen if device is None else gen.to(device)
    return random_generator(size, style_dim, n_mlp, channel_multiplier, tiny_channels(), crop, seed, device)
