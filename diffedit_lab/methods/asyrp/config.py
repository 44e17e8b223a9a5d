"""Asyrp's typed config (``conf/method/asyrp.yaml`` + ``conf/method/asyrp/*.yaml``), checked at start-up.

Timesteps are on the prior's training scale (0 … T−1) and the grid is Asyrp's (:mod:`.process`). The defaults,
stated only in ``conf/method/asyrp.yaml`` (and the per-prompt epochs in ``conf/method/asyrp/prompt/``), are the
released training script's and SDFT's Appendix E.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from diffedit_lab.methods.config import Component, EditEvalConfig, PromptConfig, check_optimizer
from diffedit_lab.utils.schema import ConfigError, bounds, target


@dataclass
class ScheduleConfig:
    """The editing range on Asyrp's grid: Δh is applied for t ∈ [t_edit, t_0]; η = ``boost_eta`` below t_boost."""

    t_0: int = field(metadata=bounds(ge=1))  # where inversion ends and generation starts (T − 1)
    t_edit: int = field(metadata=bounds(ge=0))
    t_boost: int = field(metadata=bounds(ge=0))  # 0 = no quality boosting
    boost_eta: float = field(metadata=bounds(ge=0, le=1))

    def check(self, key: str) -> None:
        if self.t_edit > self.t_0:
            raise ConfigError(f"{key}.t_edit", self.t_edit, f"expected a value <= t_0={self.t_0}")
        if self.t_boost > self.t_edit:
            raise ConfigError(f"{key}.t_boost", self.t_boost, f"expected a value <= t_edit={self.t_edit}")


@dataclass
class HSpaceConfig:
    """The Δh network (:class:`~.hspace.DeltaBlock`): its channels come from the prior's bottleneck."""

    zero_init: bool  # Δh = 0 at the start (false: the released code's default conv init)
    init_seed: int = field(metadata=bounds(ge=0))


@dataclass
class InvertConfig:
    """DDIM inversion of the training images (cached per image set × prior weights × steps)."""

    steps: int = field(metadata=bounds(ge=2, le=1000))
    batch_size: int = field(metadata=bounds(ge=1))
    cache_dir: str | None  # null: <run dir>/inversions


@dataclass
class LossConfig:
    clip: float = field(metadata=bounds(ge=0))  # λ_clip
    recon: float = field(metadata=bounds(ge=0))  # λ_recon (L1)
    recon_target: Literal["p_orig", "x0"]  # P_t of the unedited trajectory, or the real image
    text_cosine_weight: bool  # scale λ_recon by cos(T(source), T(target)), as the released code
    clip_form: Literal["log", "linear"]  # −log((2 − d)/2) (released code) or d = 1 − cos
    identity: float = field(metadata=bounds(ge=0))  # λ_id (off in the paper)

    def check(self, key: str) -> None:
        if self.clip == 0 and self.recon == 0 and self.identity == 0:
            raise ConfigError(f"{key}.clip", self.clip, "every loss weight is 0: nothing would be trained")


@dataclass
class FitConfig:
    """Training: ``epochs`` passes over ``num_images`` training images, ``batch_size`` per trajectory. Each
    trajectory runs the editing interval of the ``train_steps``-step grid with one optimiser step per timestep
    (K steps), so the stage's Trainer counts ``epochs · ⌊num_images / batch_size⌋ · K`` steps. ``checkpoint_every``
    and ``preview_every`` count trajectories (checkpoint file names count optimiser steps)."""

    epochs: int = field(metadata=bounds(ge=1))
    num_images: int = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    train_steps: int = field(metadata=bounds(ge=2, le=1000))
    lr_step_epochs: int = field(metadata=bounds(ge=1))  # StepLR: lr × lr_gamma every N epochs
    lr_gamma: float = field(metadata=bounds(gt=0, le=1))
    checkpoint_every: int = field(metadata=bounds(ge=1))
    preview_every: int = field(metadata=bounds(ge=0))  # 0 = only the final preview
    preview_images: int = field(metadata=bounds(ge=1))

    def check(self, key: str) -> None:
        if self.batch_size > self.num_images:
            raise ConfigError(f"{key}.batch_size", self.batch_size, f"expected at most num_images={self.num_images}")


@dataclass
class EditConfig:
    """Test images: inverted (``invert.steps``), then generated over ``steps`` grid points with the trained Δh
    (× ``scale``, Asyrp's editing strength); ``reconstruction`` also writes the unedited DDIM result."""

    steps: int = field(metadata=bounds(ge=2, le=1000))
    scale: float
    reconstruction: bool
    max_images: int | None = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    seed: int = field(metadata=bounds(ge=0))  # image i's boosting noise comes from seed + i
    grid_columns: int = field(metadata=bounds(ge=1))
    grid_max: int = field(metadata=bounds(ge=0))


@dataclass
class EvalConfig(EditEvalConfig):
    """The shared edit evaluation; ``conf/method/asyrp.yaml`` sets the paper's (Tab. 2: 500 test images,
    directional CLIP and ID, no FID)."""


@dataclass
class AsyrpConfig:
    target: str = target()
    name: str
    weights: str | None  # a trained <run>/asyrp.safetensors or checkpoints/fit/*.ckpt for edit/eval alone
    seed: int = field(metadata=bounds(ge=0))  # the order of the training images per epoch
    prior: Component  # the frozen unconditional prior (any UNet2DModel folder)
    clip: Component | None
    identity: Component | None
    prompt: PromptConfig
    schedule: ScheduleConfig
    hspace: HSpaceConfig
    invert: InvertConfig
    loss: LossConfig
    fit: FitConfig
    optim: dict[str, Any]
    edit: EditConfig
    eval: EvalConfig

    def check(self, key: str) -> None:
        check_optimizer(f"{key}.optim", self.optim)
        if not self.prior.get("_target_"):
            raise ConfigError(f"{key}.prior", self.prior, "expected a prior config (e.g. prior=ddpm_celebahq)")
        if not self.prompt.source_text.strip():
            raise ConfigError(
                f"{key}.prompt.source_text", self.prompt.source_text, "Asyrp's directional CLIP needs a source text"
            )
        if self.loss.clip > 0 and not self.clip:
            raise ConfigError(f"{key}.clip", self.clip, "loss.clip > 0 needs a CLIP config (e.g. clip=vit_b32)")
