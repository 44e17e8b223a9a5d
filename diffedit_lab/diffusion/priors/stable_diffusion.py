"""Stable Diffusion (v1.4 by default) as a frozen, text-conditional prior in the VAE latent space.

``to_model_space`` / ``to_image_space`` are VAE encode/decode of [-1, 1] images; ``predict_eps`` applies
classifier-free guidance with (cached) CLIP text embeddings. Weights come from a hub id or a local folder in the
diffusers pipeline layout; offline, a missing weight is a one-line :class:`UserError` naming the id/path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffedit_lab.diffusion.priors.base import DiffusionPrior, cast, freeze, load_component, resolve_dtype

SD14 = "CompVis/stable-diffusion-v1-4"


class StableDiffusionPrior(DiffusionPrior):
    """Stable Diffusion as a frozen, text-conditional prior in the VAE latent space.

    ``dtype`` follows :func:`resolve_dtype` for ``device`` (``auto``: fp16 on CUDA, fp32 elsewhere); a given
    ``device`` also receives the module.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler: Any,
        image_size: int = 512,
        dtype: str | torch.dtype | None = "auto",
        attention_slicing: bool = False,
        channels_last: bool = False,
        device: torch.device | str | None = None,
    ):
        super().__init__(scheduler)
        torch_dtype = resolve_dtype(dtype, device)
        self.unet = freeze(cast(unet, torch_dtype))
        self.vae = freeze(cast(vae, torch_dtype))
        self.text_encoder = freeze(cast(text_encoder, torch_dtype))
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        if attention_slicing:
            self.unet.set_attention_slice("auto")
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._place(device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    # --- text --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str] | str) -> torch.Tensor:
        """Token embeddings (N, L, D) for the UNet's cross-attention; cached per prompt."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        device = self.alphas_cumprod.device
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            emb = self.text_encoder(tokens.input_ids.to(device))[0]
            for p, e in zip(missing, emb):
                self._text_cache[p] = e
        return torch.stack([self._text_cache[p].to(device) for p in prompts])

    def _apply(self, fn, recurse=True):  # moving the module invalidates cached text embeddings
        self._text_cache = {}
        return super()._apply(fn, recurse)

    # --- image <-> latent -------------------------------------------------------------------------------------
    def to_model_space(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[-1, 1] images → VAE latents ``latent_dist.sample() · scaling_factor`` (differentiable)."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        dist = self.vae.encode(images.to(self.dtype)).latent_dist
        return (dist.sample(generator=generator) * self.scaling_factor).float()

    def to_image_space(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((latents / self.scaling_factor).to(self.dtype)).sample.float()

    # --- ε prediction -----------------------------------------------------------------------------------------
    def predict_eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond: torch.Tensor | None = None,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        **_: Any,
    ) -> torch.Tensor:
        """ε̂ with classifier-free guidance: ε̂_u + s·(ε̂_c − ε̂_u); ``cond``/``uncond`` are (B, L, D) embeddings."""
        batch = x_t.shape[0]
        t = self._timesteps(t, batch, x_t.device)
        if cond is None:
            cond = self.encode_text([""] * batch)
        if guidance_scale != 1.0 and uncond is None:
            uncond = self.encode_text([""] * batch)
        if guidance_scale == 1.0:
            return self.unet(x_t.to(self.dtype), t, encoder_hidden_states=cond.to(self.dtype)).sample.float()
        eps = self.unet(
            torch.cat([x_t, x_t]).to(self.dtype),
            torch.cat([t, t]),
            encoder_hidden_states=torch.cat([uncond, cond]).to(self.dtype),
        ).sample.float()
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    # --- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        source: str = SD14,
        dtype: str | torch.dtype | None = "auto",
        image_size: int | None = None,
        device: torch.device | str | None = None,
        random_weights: bool = False,
        **kwargs: Any,
    ) -> StableDiffusionPrior:
        """Load the UNet, VAE, text encoder, tokenizer and scheduler from a hub id or a pipeline folder.

        ``image_size`` defaults to the VAE's ``sample_size`` (512 for SD v1.x); ``dtype='auto'`` is resolved for
        ``device`` (:func:`resolve_dtype`: fp16 on CUDA, fp32 elsewhere), which also receives the module.

        ``random_weights=True``: the released architecture of ``source`` (:mod:`diffedit_lab.models.real_shapes`)
        with seeded random weights and a byte-level CLIP tokenizer (77 tokens), one WARNING line, no file read; an
        unknown ``source`` is a :class:`UserError`."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from diffedit_lab.models import real_shapes

        if real_shapes.check_flag(random_weights, "prior.random_weights"):
            from diffedit_lab.diffusion.priors.random_init import random_sd_prior

            shape = real_shapes.sd_prior_shape(source)
            real_shapes.announce(source)
            return random_sd_prior(
                shape.unet,
                shape.vae,
                shape.text,
                image_size=int(image_size or shape.image_size),
                scheduler=shape.scheduler,
                tokenizer_max_length=shape.max_length,
                seed=real_shapes.RANDOM_WEIGHTS_SEED,
                dtype=dtype,
                device=device,
                **kwargs,
            )
        what = "Stable Diffusion"
        unet = load_component(UNet2DConditionModel, source, f"{what} unet", subfolder="unet")
        vae = load_component(AutoencoderKL, source, f"{what} vae", subfolder="vae")
        text_encoder = load_component(CLIPTextModel, source, f"{what} text_encoder", subfolder="text_encoder")
        tokenizer = load_component(CLIPTokenizer, source, f"{what} tokenizer", subfolder="tokenizer")
        scheduler = load_component(DDPMScheduler, source, f"{what} scheduler", subfolder="scheduler")
        image_size = int(image_size or getattr(vae.config, "sample_size", 512) or 512)
        return cls(
            unet, vae, text_encoder, tokenizer, scheduler, image_size=image_size, dtype=dtype, device=device, **kwargs
        )

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the diffusers pipeline layout (unet/ vae/ text_encoder/ tokenizer/ scheduler/)."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
