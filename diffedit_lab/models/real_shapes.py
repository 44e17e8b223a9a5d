"""The released architectures of the pretrained networks the paper presets load, written out in code (nothing can be
downloaded here), and the ``random_weights`` switch that builds them with random weights.

``random_weights=true`` (root key; ``debug=real_shapes``) reaches every file/hub-backed component as
``random_weights: ${random_weights}``; its loader then builds the released architecture with seeded random weights
(:data:`RANDOM_WEIGHTS_SEED`), logs one WARNING (:func:`announce`) and never touches a file. Used to prove each
paper preset end to end at real size (shapes, memory) on machines without the weights. Results are meaningless.

* Stable Diffusion v1.4 / v1.5 (``StableDiffusionPrior.from_pretrained``): :data:`SD14_UNET`, :data:`SD14_VAE`,
  :data:`SD14_TEXT`, :data:`SD14_SCHEDULER`, 512 px, 77-token prompts;
* ``google/ddpm-ema-celebahq-256`` / ``-church-256`` (``UnconditionalPrior.from_pretrained``):
  :data:`DDPM_CELEBAHQ_UNET` (church: the identical config), :data:`DDPM_SCHEDULER`;
* ``adm-ffhq-256``, the converted light ADM FFHQ-256 (``ffhq_p2.pt``): :data:`ADM_FFHQ_UNET`, from that model's flags
  through the converter (:mod:`~diffedit_lab.models.adm_convert`);
* StyleGAN2 config-f (``build_generator``): the generator config's own ``size``/``style_dim``/``n_mlp``/
  ``channel_multiplier``; ArcFace IR-SE50 (``build_identity``): :data:`~diffedit_lab.models.identity.IRSE50`;
  CLIP (``CLIPGuide``): open_clip's own config of ``model_name`` (the ``pretrained`` tag's ``quick_gelu``).

A prior source is found by its exact name, else by its last path component (``/data/weights/adm-ffhq-256`` →
``adm-ffhq-256``, ``./sd/stable-diffusion-v1-4`` → SD v1.4); any other source is a one-line error, never a guess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from diffedit_lab.models.adm_convert import ADMConfig, scheduler_config, unet2d_config
from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0  # every random-weights build is seeded: the same weights in every run and process

# --- Stable Diffusion v1.4 (the hub configs of CompVis/stable-diffusion-v1-4; v1.5 has the same architecture)
SD14_UNET: dict[str, Any] = dict(
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
SD14_VAE: dict[str, Any] = dict(
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
SD14_TEXT: dict[str, Any] = dict(  # CLIP ViT-L/14's text tower
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD14_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    steps_offset=1,
)

# --- google/ddpm-ema-celebahq-256's UNet2DModel config (the original DDPM 256-px model: ch 128, mult 1,1,2,2,4,4,
# 2 res blocks, attention at 16x16). google/ddpm-ema-church-256 has the identical config (same DDPM architecture
# for every 256-px dataset; only the weights differ).
DDPM_CELEBAHQ_UNET: dict[str, Any] = dict(
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
DDPM_CHURCH_UNET: dict[str, Any] = DDPM_CELEBAHQ_UNET
DDPM_SCHEDULER: dict[str, Any] = dict(  # their scheduler_config.json: linear betas 1e-4 → 0.02, T = 1000
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    variance_type="fixed_small",
    clip_sample=True,
)

# --- The light ADM FFHQ-256 of P2-weighting (ffhq_p2.pt, SDFT's source): the flags of P2-weighting's README and
# SDFT's train_ddp_distill.sh (image 256, 128 channels, 1 res block, attention at 16 with 64 channels per head,
# learned sigma, scale-shift norm, resblock up/down, linear 1000 steps) are ADMConfig's defaults; the converter
# turns them into the UNet2DModel that `python -m diffedit_lab.tools.convert_adm` writes.
ADM_FFHQ = ADMConfig()
ADM_FFHQ_UNET: dict[str, Any] = unet2d_config(ADM_FFHQ)
ADM_FFHQ_SCHEDULER: dict[str, Any] = {k: v for k, v in scheduler_config(ADM_FFHQ).items() if not k.startswith("_")}


@dataclass(frozen=True)
class PixelPriorShape:
    """A pixel-space prior: ``UNet2DModel(**unet)`` and ``DDPMScheduler(**scheduler)``."""

    unet: dict[str, Any]
    scheduler: dict[str, Any]


@dataclass(frozen=True)
class SDPriorShape:
    """A Stable Diffusion prior: U-Net, VAE and text encoder configs, scheduler, image size, prompt length."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    scheduler: dict[str, Any]
    image_size: int = 512
    max_length: int = 77


SD14 = SDPriorShape(SD14_UNET, SD14_VAE, SD14_TEXT, SD14_SCHEDULER)
SD_PRIORS: dict[str, SDPriorShape] = {
    "CompVis/stable-diffusion-v1-4": SD14,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": SD14,
    "runwayml/stable-diffusion-v1-5": SD14,
}
PIXEL_PRIORS: dict[str, PixelPriorShape] = {
    "google/ddpm-ema-celebahq-256": PixelPriorShape(DDPM_CELEBAHQ_UNET, DDPM_SCHEDULER),
    "google/ddpm-ema-church-256": PixelPriorShape(DDPM_CHURCH_UNET, DDPM_SCHEDULER),
    "adm-ffhq-256": PixelPriorShape(ADM_FFHQ_UNET, ADM_FFHQ_SCHEDULER),
}


def _lookup(table: dict[str, Any], source: str, what: str) -> Any:
    if source in table:
        return table[source]
    name = PurePath(str(source).rstrip("/")).name
    for key, shape in table.items():
        if name and name == key.rsplit("/", 1)[-1]:
            return shape
    raise UserError(
        f"random_weights=true: no released architecture is known for the {what} '{source}' (known: "
        f"{', '.join(table)}); use one of those, or set random_weights=false for this component"
    )


def pixel_prior_shape(source: str) -> PixelPriorShape:
    """The released architecture of a pixel-space prior source (hub id or a folder named like one)."""
    return _lookup(PIXEL_PRIORS, source, "pixel prior")


def sd_prior_shape(source: str) -> SDPriorShape:
    """The released architecture of a Stable Diffusion source (hub id or a folder named like one)."""
    return _lookup(SD_PRIORS, source, "Stable Diffusion prior")


def check_flag(value: Any, key: str = "random_weights") -> bool:
    """``random_weights`` must be a boolean (a string such as ``'false'`` would be truthy)."""
    if not isinstance(value, bool):
        from diffedit_lab.utils.schema import ConfigError

        raise ConfigError(key, value, "expected true or false")
    return value


def announce(source: str) -> None:
    """The one WARNING line every random-weights build logs (on stderr and in Hydra's job log)."""
    log.warning(
        "random weights at the real shape of %s: results are meaningless; for shape/memory/smoke checks only", source
    )
