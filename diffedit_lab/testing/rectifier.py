"""A tiny Rectifier hypernetwork for tests and the benchmark: the production :class:`RectifierNet` with a narrow
1-1-1-1 ResNet encoder and 8-channel subnets, seeded (the global random state is left alone)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from diffedit_lab.models.rectifier import RectifierNet, select_layers
from diffedit_lab.models.rectifier.layers import DEFAULT_PATTERNS
from diffedit_lab.testing._seed import seeded

TINY_ENCODER = dict(encoder_layers=(1, 1, 1, 1), encoder_widths=(8, 8, 16, 16))


def tiny_rectifier(
    unet: nn.Module,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    subnet_channels: int = 8,
    time_dim: int = 16,
    seed: int = 0,
    norm: str = "batch",
) -> RectifierNet:
    """A Rectifier for ``unet`` (a diffusers ``UNet2DModel``) at its ``sample_size``; Δ = 0 at init."""
    with seeded(seed):
        return RectifierNet(
            select_layers(unet, patterns),
            int(unet.config.sample_size),
            int(unet.config.in_channels),
            norm=norm,
            subnet_channels=subnet_channels,
            time_dim=time_dim,
            **TINY_ENCODER,
        )
