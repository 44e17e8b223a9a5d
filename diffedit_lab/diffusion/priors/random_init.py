"""Diffusion priors with random weights from architecture configs: the real-shape switch (``random_weights=true``,
:mod:`diffedit_lab.models.real_shapes`), the benchmark, and the tiny priors of tests and the demo
(:mod:`diffedit_lab.testing.priors`, which re-exports these builders).

Same classes and code paths as the pretrained priors, only the weights are random; building one does not touch the
global random state (:func:`~diffedit_lab.utils.rng.seeded`). Nothing is read from disk or the hub: the text
encoder's tokenizer is a real CLIP byte-level BPE tokenizer built in code with a byte vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffedit_lab.diffusion.priors.pixel import UnconditionalPrior
from diffedit_lab.diffusion.priors.stable_diffusion import StableDiffusionPrior
from diffedit_lab.utils.rng import seeded

Device = torch.device | str | None

# SD v1.x's noise schedule (CompVis/stable-diffusion-v1-4 scheduler config).
SD_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
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

    ``max_length=77`` gives SD's real sequence length (the SD v1.4-shaped text encoder of ``random_weights``)."""
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
    ``UNet2DConditionModel``, ``vae``: ``AutoencoderKL``, ``text``: ``CLIPTextConfig`` fields; the token ids come
    from :func:`tiny_clip_tokenizer`, the vocabulary size from ``text`` when it gives one). With a ``device`` the
    weights are initialised there (``meta``: shapes only, no memory). ``kwargs`` go to :class:`StableDiffusionPrior`
    (``attention_slicing``, ``channels_last``)."""
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

    unet, scheduler = (
        _plain(unet),
        _plain(scheduler),
    )  # from a Hydra config: plain lists, so save_pretrained's JSON works
    with seeded(seed, device):
        model = UNet2DModel(**unet)
    sched = DDPMScheduler(**(scheduler or {"num_train_timesteps": 1000}))
    return UnconditionalPrior(model, sched, dtype=dtype, device=device, **kwargs)


def _plain(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A config mapping as plain Python containers (OmegaConf's ListConfig is not JSON-serialisable)."""
    if node is None:
        return None
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
