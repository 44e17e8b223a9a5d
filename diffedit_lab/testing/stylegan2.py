"""Randomly initialised StyleGAN2 generators: the tiny one of tests and the demo (``generator=tiny``) and
real-shaped ones for the benchmark. Same class and checkpoint code as pretrained generators
(:mod:`diffedit_lab.models.stylegan2`), only the weights are random."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from diffedit_lab.models.stylegan2 import StyleGAN2Generator, load_generator
from diffedit_lab.testing._seed import seeded

# A few channels per resolution: a 32-64 px generator that runs in milliseconds on CPU.
TINY_CHANNELS: dict[int, int] = {4: 16, 8: 16, 16: 16, 32: 8, 64: 8, 128: 8, 256: 8, 512: 8, 1024: 8}


def tiny_channels() -> dict[int, int]:
    """A fresh copy of :data:`TINY_CHANNELS` (resolution → feature channels)."""
    return dict(TINY_CHANNELS)


def random_generator(
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    channels: Mapping[int, int] | None = None,
    crop: Sequence[int] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> StyleGAN2Generator:
    """A StyleGAN2 generator with random weights from ``seed`` (the global RNG is left alone), in eval mode;
    with a ``device`` it is initialised there. E.g. config-f 1024: ``random_generator(1024)``."""
    with seeded(seed, device):
        gen = StyleGAN2Generator(
            size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, channels=channels, crop=crop
        )
    return gen.eval()


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
