"""What the benchmark builds: the tiny models of tests/demo (``tiny``, CPU) and random models with the real
published shapes (``real``, CUDA): SD v1.4 UNet/VAE/text encoder in fp16, the 256-px ddpm-celebahq UNet in fp16,
StyleGAN2 config-f 1024 in fp32. All come from the builders of :mod:`diffedit_lab.testing` (nothing is downloaded:
the cost of a network does not depend on its weights); the real shapes come from
:mod:`diffedit_lab.models.real_shapes`.
"""

from __future__ import annotations

from typing import Any

import torch

from diffedit_lab.models.real_shapes import (  # the released shapes, written out in the package
    DDPM_CELEBAHQ_UNET,
    SD14_SCHEDULER,
    SD14_TEXT,
    SD14_UNET,
    SD14_VAE,
)
from experiments.bench.harness import SEED

STYLEGAN2_F_1024 = dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)


def n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def build_sd(size: str, device: torch.device):
    """Tiny SD (the tests/demo miniature, fp32) or a random SD v1.4-shaped prior at 512 px in fp16, initialised
    directly on ``device``; its tokenizer is a real CLIP BPE tokenizer with a tiny vocabulary padded to 77 tokens."""
    from diffedit_lab.testing.priors import random_sd_prior, tiny_sd_prior

    if size == "tiny":
        return tiny_sd_prior(seed=SEED, device=device)
    return random_sd_prior(
        SD14_UNET,
        SD14_VAE,
        SD14_TEXT,
        image_size=512,
        scheduler=SD14_SCHEDULER,
        tokenizer_max_length=77,
        seed=SEED,
        dtype="fp16",
        device=device,
    )


def build_uncond(size: str, device: torch.device):
    """The tiny pixel prior (ε-only) or a random ddpm-celebahq-256-shaped one in fp16."""
    from diffedit_lab.testing.priors import random_unet_prior, tiny_unet_prior

    if size == "tiny":
        return tiny_unet_prior(seed=SEED, device=device)
    return random_unet_prior(DDPM_CELEBAHQ_UNET, seed=SEED, dtype="fp16", device=device)


def build_generator_and_mapper(size: str, device: torch.device) -> tuple[Any, Any]:
    """The demo's tiny StyleGAN2 (``generator=tiny``) or a random config-f 1024, frozen; and a levels mapper
    editing all three levels (the costliest mapper) of matching width."""
    from diffedit_lab.models.mapper import LevelsMapper
    from diffedit_lab.testing.stylegan2 import random_generator, tiny_generator

    if size == "tiny":
        gen = tiny_generator(seed=SEED, device=device)
    else:
        gen = random_generator(**STYLEGAN2_F_1024, seed=SEED, device=device)
    gen.requires_grad_(False)
    torch.manual_seed(SEED)
    mapper = LevelsMapper(dim=gen.style_dim).to(device).eval()
    return gen, mapper
