"""Pretrained diffusion priors behind one interface.

Two families serve all methods:

* :class:`UnconditionalPrior` — a diffusers ``UNet2DModel`` in pixel space (``google/ddpm-ema-celebahq-256``,
  ``google/ddpm-ema-church-256``, an ADM checkpoint converted with ``diffedit_lab.tools.convert_adm``).
  Learned-variance models (6 output channels) are split: ``predict_eps`` returns the ε half only.
* :class:`StableDiffusionPrior` — Stable Diffusion (v1.4 by default): text-conditional UNet in the VAE latent
  space, with classifier-free guidance.

Both expose ``alphas_cumprod``, ``num_train_timesteps``, ``predict_eps(x_t, t, ...)``, ``add_noise`` and
``x0_from_eps``; ``to_model_space`` / ``to_image_space`` map [-1, 1] images to the space the UNet works in
(identity for pixel priors, VAE encode/decode for SD). Weights come from a hub id or a local folder in the diffusers
layout; offline, a missing weight is a one-line :class:`UserError` naming the id/path. ``tiny()`` builds a
randomly initialised miniature with the same structure for tests and the demo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffedit_lab.diffusion import schedule
from diffedit_lab.utils.errors import UserError, missing_weights

SD14 = "CompVis/stable-diffusion-v1-4"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str | None = None) -> torch.dtype:
    """The one rule for precision names. ``auto`` → float16 where the prior will run on a GPU (``device``; when
    unknown, whether CUDA is present), else float32 — frozen priors in half precision only on a GPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        on_gpu = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        return torch.float16 if on_gpu else torch.float32
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype not in table:
        raise UserError(f"unknown dtype '{dtype}'; use auto, fp32, fp16 or bf16")
    return table[dtype]


def load_component(cls, source: str, what: str, **kwargs):
    """``cls.from_pretrained(source, **kwargs)`` with a clear message when the weights are not available."""
    src = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
    if source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().exists():
        raise UserError(f"{what}: local path '{source}' does not exist (expected a diffusers model folder)")
    try:
        return cls.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(src).exists():
            raise UserError(f"{what}: '{src}' is not a valid diffusers/transformers folder: {exc}") from exc
        raise missing_weights(what, source, "see README 'Weights'") from exc


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast only when needed (diffusers warns on every ``.to(dtype)``)."""
    current = next(module.parameters()).dtype
    return module if current == dtype else module.to(dtype)


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


class DiffusionPrior(nn.Module):
    """Shared schedule arithmetic; subclasses provide the network call."""

    def __init__(self, scheduler: Any):
        super().__init__()
        self.scheduler = scheduler
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)

    def _apply(self, fn, recurse=True):
        # ᾱ must stay float32 whatever the module is cast to: in fp16/bf16 the first ᾱ_t round to 1 (SNR = ∞).
        out = super()._apply(fn, recurse)
        self._buffers["alphas_cumprod"] = self.scheduler.alphas_cumprod.to(self.alphas_cumprod.device, torch.float32)
        return out

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return schedule.add_noise(x0, eps, self.alphas_cumprod, t)

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return schedule.x0_from_eps(x_t, eps, self.alphas_cumprod, t)

    def to_model_space(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images

    def to_image_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def _timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device).long()
        return t.expand(batch) if t.ndim == 0 else t


class UnconditionalPrior(DiffusionPrior):
    """Pixel-space ``UNet2DModel`` prior; ε-prediction, optionally with learned variance."""

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        dtype: str | torch.dtype | None = "fp32",
        channels_last: bool = False,
        gradient_checkpointing: bool = False,
        trainable: bool = False,
    ):
        super().__init__(scheduler)
        self.unet = cast(unet, resolve_dtype(dtype))
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if not trainable:
            freeze(self.unet)

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def learned_variance(self) -> bool:
        return int(self.unet.config.out_channels) == 2 * self.in_channels

    def forward_raw(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The UNet output as is (6 channels for learned-variance models)."""
        t = self._timesteps(t, x_t.shape[0], x_t.device)
        dtype = next(self.unet.parameters()).dtype
        return self.unet(x_t.to(dtype), t).sample.float()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, **_: Any) -> torch.Tensor:
        out = self.forward_raw(x_t, t)
        return out[:, : self.in_channels] if self.learned_variance else out

    @classmethod
    def from_pretrained(cls, source: str, subfolder: str | None = None, dtype: str = "auto", **kwargs: Any):
        from diffusers import DDPMScheduler, UNet2DModel

        unet = load_component(UNet2DModel, source, "diffusion prior UNet", subfolder=subfolder)
        try:
            scheduler = DDPMScheduler.from_pretrained(
                str(Path(source).expanduser()) if Path(source).expanduser().exists() else source,
                subfolder=subfolder,
            )
        except (OSError, ValueError):  # folders without scheduler_config.json: the standard linear DDPM schedule
            scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        return cls(unet, scheduler, dtype=dtype, **kwargs)

    @classmethod
    def tiny(cls, image_size: int = 32, learned_variance: bool = False, seed: int = 0, **kwargs: Any):
        """A miniature pixel UNet (2 levels, 8/16 channels, attention at the bottom) — random weights."""
        from diffusers import DDPMScheduler, UNet2DModel

        torch.manual_seed(seed)
        unet = UNet2DModel(
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
        return cls(unet, DDPMScheduler(num_train_timesteps=1000), dtype="fp32", **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.unet.save_pretrained(path)
        self.scheduler.save_pretrained(path)


class StableDiffusionPrior(DiffusionPrior):
    """Stable Diffusion as a frozen, text-conditional prior in the VAE latent space."""

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
    ):
        super().__init__(scheduler)
        torch_dtype = resolve_dtype(dtype)
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
    def from_pretrained(cls, source: str = SD14, dtype: str = "auto", image_size: int | None = None, **kwargs: Any):
        """Load the UNet, VAE, text encoder, tokenizer and scheduler from a hub id or a pipeline folder.

        ``image_size`` defaults to the VAE's ``sample_size`` (512 for SD v1.x)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        what = "Stable Diffusion"
        unet = load_component(UNet2DConditionModel, source, f"{what} unet", subfolder="unet")
        vae = load_component(AutoencoderKL, source, f"{what} vae", subfolder="vae")
        text_encoder = load_component(CLIPTextModel, source, f"{what} text_encoder", subfolder="text_encoder")
        tokenizer = load_component(CLIPTokenizer, source, f"{what} tokenizer", subfolder="tokenizer")
        scheduler = load_component(DDPMScheduler, source, f"{what} scheduler", subfolder="scheduler")
        image_size = int(image_size or getattr(vae.config, "sample_size", 512) or 512)
        return cls(unet, vae, text_encoder, tokenizer, scheduler, image_size=image_size, dtype=dtype, **kwargs)

    @classmethod
    def tiny(cls, image_size: int = 32, seed: int = 0, **kwargs: Any):
        """A miniature SD (UNet 16/32 ch, VAE ×2 downsampling, 2-layer text encoder) with random weights."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
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
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(16, 32),
            norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=image_size,
        )
        tokenizer = tiny_clip_tokenizer()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        scheduler = DDPMScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
        )
        kwargs.setdefault("dtype", "fp32")
        return cls(unet, vae, text_encoder, tokenizer, scheduler, image_size=image_size, **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the diffusers pipeline layout (unet/ vae/ text_encoder/ tokenizer/ scheduler/)."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")


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
    """A byte-level CLIP BPE tokenizer with no merges (≈ 500 tokens): real tokenizer code, offline, tiny vocab."""
    from transformers import CLIPTokenizer

    chars = _byte_symbols()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
