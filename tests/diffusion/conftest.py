"""Shared fixtures for the diffusion-core tests: tiny randomly initialised priors, built once per session."""

import copy

import pytest

from diffedit_lab.diffusion.priors import StableDiffusionPrior, UnconditionalPrior
from diffedit_lab.testing.priors import tiny_sd_prior, tiny_unet_prior


@pytest.fixture(scope="session")
def sd_prior() -> StableDiffusionPrior:
    """Tiny Stable Diffusion (32 px images, 4×16×16 latents, 16-token prompts of width 32). Do not mutate."""
    return tiny_sd_prior()


@pytest.fixture
def sd_prior_copy(sd_prior) -> StableDiffusionPrior:
    """A private deep copy of the tiny SD prior (empty text cache) for tests that patch or mutate it."""
    prior = copy.deepcopy(sd_prior)
    prior._text_cache = {}
    return prior


@pytest.fixture(scope="session")
def pixel_prior() -> UnconditionalPrior:
    """Tiny pixel-space UNet2DModel prior (3×32×32), ε-only output. Do not mutate."""
    return tiny_unet_prior()


@pytest.fixture(scope="session")
def pixel_prior_lv() -> UnconditionalPrior:
    """Tiny pixel-space prior with learned variance (6 output channels). Do not mutate."""
    return tiny_unet_prior(learned_variance=True)
