"""Randomly initialised diffusion priors: the tiny Stable Diffusion and pixel U-Net of tests and the demo, and the
generic builders the benchmark uses with the real models' shapes.

Same classes and code paths as the pretrained priors (:mod:`diffedit_lab.diffusion.priors`), only the weights are
random; building one does not touch the global random state (:func:`~diffedit_lab.testing._seed.seeded`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffedit_lab.diffusion.priors import StableDiffusionPrior, UnconditionalPrior
from diffedit_lab.testing._seed import seeded

Device = torch.device | str | None

# SD v1.x's noise schedule (CompVis/stable-diffusion-v1-4 scheduler config).
SD_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
)


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


# ------------------------------------------------------------------------------------------------ tokenizer
def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for raw bytes used by byte-level BPE (GPT-2/CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def tiny_clip_tokenizer(max_length: int = 16):
    """A byte-level CLIP BPE tokenizer with no merges (≈ 500 tokens): real tokenizer code, offline, tiny vocab.

    ``max_length=77`` gives SD's real sequence length (the benchmark's SD v1.4-shaped text encoder)."""
    from transformers import CLIPTokenizer

    chars = _byte_symbols()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


# ------------------------------------------------------------------------------------------------- builders
def random_sd_prior(
    unet: Mapping[str, Any],
    vae: Mapping[str, Any],
    text: Mapping[str, Any],
    image_size: int,
    scheduler: Mapping[str, Any] | None = None,
    tokenizer_max_length: int = 16,
    seed: int = 0,
    dtype: str | torch.dtype | None = "fp32",
    device: Device = None,
    **kwargs: Any,
) -> StableDiffusionPrior:
    """A :class:`StableDiffusionPrior` with random weights from diffusers/transformers configs (``unet``:
    ``UNet2DConditionModel``, ``vae``: ``AutoencoderKL``, ``text``: ``CLIPTextConfig`` fields; the vocabulary and
    token ids come from :func:`tiny_clip_tokenizer`). With a ``device`` the weights are initialised there.
    ``kwargs`` go to :class:`StableDiffusionPrior` (``attention_slicing``, ``channels_last``)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(max_length=tokenizer_max_length)
    text_cfg = {"vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length, **text}
    with seeded(seed, device):
        unet_model = UNet2DConditionModel(**unet)
        vae_model = AutoencoderKL(**vae)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **text_cfg,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    sched = DDPMScheduler(**(SD_SCHEDULER if scheduler is None else scheduler))
    parts = (unet_model, vae_model, text_encoder, tokenizer, sched)
    return StableDiffusionPrior(*parts, image_size=image_size, dtype=dtype, device=device, **kwargs)


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


def random_unet_prior(
    unet: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None = None,
    seed: int = 0,
    dtype: str | torch.dtype | None = "fp32",
    device: Device = None,
    **kwargs: Any,
) -> UnconditionalPrior:
    """An :class:`UnconditionalPrior` with a random ``UNet2DModel(**unet)`` and a ``DDPMScheduler(**scheduler)``
    (default: the linear DDPM schedule, T = 1000). ``kwargs`` go to :class:`UnconditionalPrior` (``trainable``,
    ``channels_last``, ``gradient_checkpointing``)."""
    from diffusers import DDPMScheduler, UNet2DModel

    with seeded(seed, device):
        model = UNet2DModel(**unet)
    sched = DDPMScheduler(**(scheduler or {"num_train_timesteps": 1000}))
    return UnconditionalPrior(model, sched, dtype=dtype, device=device, **kwargs)


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
