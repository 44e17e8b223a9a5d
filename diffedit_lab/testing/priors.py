"""Randomly initialised diffusion priors of tests and the demo: the tiny Stable Diffusion and pixel U-Net.

Same classes and code paths as the pretrained priors (:mod:`diffedit_lab.diffusion.priors`), only the weights are
random; building one does not touch the global random state. The generic builders (``random_sd_prior``,
``random_unet_prior``, ``tiny_clip_tokenizer``, ``SD_SCHEDULER``) live in production code
(:mod:`diffedit_lab.diffusion.priors.random_init`, used by ``random_weights=true`` and the benchmark) and are
re-exported here.
"""

from __future__ import annotations

from typing import Any

import torch

from diffedit_lab.diffusion.priors import StableDiffusionPrior, UnconditionalPrior
from diffedit_lab.diffusion.priors.random_init import (
    SD_SCHEDULER,
    random_sd_prior,
    random_unet_prior,
    tiny_clip_tokenizer,
)

__all__ = [
    "SD_SCHEDULER",
    "random_sd_prior",
    "random_unet_prior",
    "tiny_clip_tokenizer",
    "tiny_sd_configs",
    "tiny_sd_prior",
    "tiny_unet_config",
    "tiny_unet_prior",
]

Device = torch.device | str | None


def tiny_sd_configs(image_size: int = 32) -> dict[str, dict[str, Any]]:
    """Configs of the miniature SD: UNet 16/32 channels, VAE with one ×2 downsampling (latents 4 × size/2), a
    2-layer width-32 text encoder. Keys: ``unet``, ``vae``, ``text`` (CLIPTextConfig without the token ids)."""
    return {
        "unet": dict(
            sample_size=image_size // 2,
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(16, 32),
            norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=image_size,
        ),
        "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    }


def tiny_unet_config(image_size: int = 32, learned_variance: bool = False) -> dict[str, Any]:
    """The miniature pixel ``UNet2DModel``: 2 levels, 16/32 channels, attention at the bottom."""
    return dict(
        sample_size=image_size,
        in_channels=3,
        out_channels=6 if learned_variance else 3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
    )


def tiny_sd_prior(
    image_size: int = 32,
    seed: int = 0,
    dtype: str | torch.dtype | None = "fp32",
    device: Device = None,
    **kwargs: Any,
) -> StableDiffusionPrior:
    """The miniature Stable Diffusion of tests and the demo (``prior=tiny_sd``): 32 px images, 4×16×16 latents,
    16-token prompts of width 32, SD's scaled-linear schedule; random weights from ``seed``."""
    cfg = tiny_sd_configs(image_size)
    return random_sd_prior(
        cfg["unet"], cfg["vae"], cfg["text"], image_size, seed=seed, dtype=dtype, device=device, **kwargs
    )


def tiny_unet_prior(
    image_size: int = 32,
    learned_variance: bool = False,
    seed: int = 0,
    dtype: str | torch.dtype | None = "fp32",
    device: Device = None,
    **kwargs: Any,
) -> UnconditionalPrior:
    """The miniature pixel prior of tests and the demo (``prior=tiny_unet``): a 2-level ``UNet2DModel`` at
    ``image_size`` px, ε-only or with learned variance (6 output channels); random weights from ``seed``."""
    return random_unet_prior(
        tiny_unet_config(image_size, learned_variance), seed=seed, dtype=dtype, device=device, **kwargs
    )
