"""Fixtures of the Asyrp tests: the tiny random pixel prior (learned σ, as ADM) and a Δh network on it."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.methods.asyrp.hspace import HSpaceShift, build_delta
from diffedit_lab.testing.priors import tiny_unet_prior


@pytest.fixture(scope="module")
def prior():
    return tiny_unet_prior(image_size=32, learned_variance=True, seed=0)


def nonzero_shift(prior, seed: int = 1) -> HSpaceShift:
    """A Δh network with random (not zeroed) output weights: a real, visible shift."""
    torch.manual_seed(seed)
    delta = build_delta(prior.unet, zero_init=False)
    with torch.no_grad():
        delta.conv_out.weight.mul_(20.0)
    return HSpaceShift(prior.unet, delta)
