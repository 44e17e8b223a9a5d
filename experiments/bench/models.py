"""What the benchmark builds: the tiny models of tests/demo (``tiny``, CPU) and random models with the real
published shapes (``real``, CUDA): SD v1.4 UNet/VAE/text encoder in fp16, the 256-px ddpm-celebahq UNet in fp16,
StyleGAN2 config-f 1024 in fp32. All come from the builders of :mod:`diffedit_lab.testing` (nothing is downloaded:
the cost of a network does not depend on its weights); only the real shapes are written out here.
"""

from __future__ import annotations

from typing import Any

import torch

from experiments.bench.harness import SEED

# --- SD v1.4 shapes, written out (the hub configs of CompVis/stable-diffusion-v1-4), so nothing is downloaded
SD14_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
)
SD14_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
)
SD14_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD14_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    steps_offset=1,
)
# google/ddpm-ema-celebahq-256's UNet2DModel config.
DDPM_CELEBAHQ_UNET = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
    norm_eps=1e-6,
    act_fn="silu",
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
)
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
