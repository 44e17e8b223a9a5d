"""Asyrp's typed config (``conf/method/asyrp.yaml`` + ``conf/method/asyrp/*.yaml``), checked at start-up.

Timesteps are on the prior's training scale (0 … T−1) and the grid is Asyrp's (:mod:`.process`). Defaults are the
released training script's and SDFT's Appendix E: 100 training images, 50 generative steps in training, 100
inversion steps, editing interval [999, 500], quality boosting below 200, SGD lr 0.5 (×0.1 every 3 epochs),
λ_clip 1, λ_recon 3, 5 epochs (3 for sad/angry/old: ``conf/method/asyrp/prompt/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from diffedit_lab.methods.config import Component, EditEvalConfig, PromptConfig, check_optimizer
from diffedit_lab.utils.schema import ConfigError, bounds, target


@dataclass
class ScheduleConfig:
    """The editing range on Asyrp's grid: Δh is applied for t ∈ [t_edit, t_0]; η = ``boost_eta`` below t_boost."""

    t_0: int = field(default=999, metadata=bounds(ge=1))  # where inversion ends and generation starts (T − 1)
    t_edit: int = field(default=500, metadata=bounds(ge=0))
    t_boost: int = field(default=200, metadata=bounds(ge=0))  # 0 = no quality boosting
    boost_eta: float = field(default=1.0, metadata=bounds(ge=0, le=1))

    def check(self, key: str) -> None:
        if self.t_edit > self.t_0:
            raise ConfigError(f"{key}.t_edit", self.t_edit, f"expected a value <= t_0={self.t_0}")
        if self.t_boost > self.t_edit:
            raise ConfigError(f"{key}.t_boost", self.t_boost, f"expected a value <= t_edit={self.t_edit}")


@dataclass
class HSpaceConfig:
    """The Δh network (:class:`~.hspace.DeltaBlock`): its channels come from the prior's bottleneck."""

    zero_init: bool = True  # Δh = 0 at the start (false: the released code's default conv init)
    init_seed: int = field(default=0, metadata=bounds(ge=0))


@dataclass
class InvertConfig:
    """DDIM inversion of the training images (cached per image set × prior weights × steps)."""

    steps: int = field(default=100, metadata=bounds(ge=2, le=1000))
    batch_size: int = field(default=8, metadata=bounds(ge=1))
    cache_dir: str | None = None  # null: <run dir>/inversions


@dataclass
class LossConfig:
    clip: float = field(default=1.0, metadata=bounds(ge=0))  # λ_clip
    recon: float = field(default=3.0, metadata=bounds(ge=0))  # λ_recon (L1)
    recon_target: Literal["p_orig", "x0"] = "p_orig"  # P_t of the unedited trajectory, or the real image
    text_cosine_weight: bool = True  # scale λ_recon by cos(T(source), T(target)), as the released code
    clip_form: Literal["log", "linear"] = "log"  # −log((2 − d)/2) (released code) or d = 1 − cos
    identity: float = field(default=0.0, metadata=bounds(ge=0))  # λ_id (off in the paper)

    def check(self, key: str) -> None:
        if self.clip == 0 and self.recon == 0 and self.identity == 0:
            raise ConfigError(f"{key}.clip", self.clip, "every loss weight is 0: nothing would be trained")


@dataclass
class FitConfig:
    """Training: ``epochs`` passes over ``num_images`` training images, ``batch_size`` per trajectory. Each
    trajectory runs the editing interval of the ``train_steps``-step grid with one optimiser step per timestep
    (K steps), so the stage's Trainer counts ``epochs · ⌊num_images / batch_size⌋ · K`` steps. ``checkpoint_every``
    and ``preview_every`` count trajectories (checkpoint file names count optimiser steps)."""

    epochs: int = field(default=5, metadata=bounds(ge=1))
    num_images: int = field(default=100, metadata=bounds(ge=1))
    batch_size: int = field(default=1, metadata=bounds(ge=1))
    train_steps: int = field(default=50, metadata=bounds(ge=2, le=1000))
    lr_step_epochs: int = field(default=3, metadata=bounds(ge=1))  # StepLR: lr × lr_gamma every N epochs
    lr_gamma: float = field(default=0.1, metadata=bounds(gt=0, le=1))
    checkpoint_every: int = field(default=50, metadata=bounds(ge=1))
    preview_every: int = field(default=0, metadata=bounds(ge=0))  # 0 = only the final preview
    preview_images: int = field(default=2, metadata=bounds(ge=1))

    def check(self, key: str) -> None:
        if self.batch_size > self.num_images:
            raise ConfigError(f"{key}.batch_size", self.batch_size, f"expected at most num_images={self.num_images}")


@dataclass
class EditConfig:
    """Test images: inverted (``invert.steps``), then generated over ``steps`` grid points with the trained Δh
    (× ``scale``, Asyrp's editing strength); ``reconstruction`` also writes the unedited DDIM result."""

    steps: int = field(default=100, metadata=bounds(ge=2, le=1000))
    scale: float = 1.0
    reconstruction: bool = True
    max_images: int | None = field(default=16, metadata=bounds(ge=1))
    batch_size: int = field(default=4, metadata=bounds(ge=1))
    seed: int = field(default=0, metadata=bounds(ge=0))  # image i's boosting noise comes from seed + i
    grid_columns: int = field(default=8, metadata=bounds(ge=1))
    grid_max: int = field(default=32, metadata=bounds(ge=0))


@dataclass
class EvalConfig(EditEvalConfig):
    """The shared edit evaluation, on the paper's 500 test images, without FID (Tab. 2: directional CLIP, ID)."""

    max_images: int | None = field(default=500, metadata=bounds(ge=1))
    metrics: list[str] = field(default_factory=lambda: ["clip_dir", "identity", "lpips"])


@dataclass
class AsyrpConfig:
    target: str = target()
    name: str = "asyrp"
    weights: str | None = None  # a trained <run>/asyrp.pt or checkpoints/fit/*.ckpt for edit/eval alone
    seed: int = field(default=0, metadata=bounds(ge=0))  # the order of the training images per epoch
    prior: Component = field(default_factory=dict)  # the frozen unconditional prior (any UNet2DModel folder)
    clip: Component | None = None
    identity: Component | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    hspace: HSpaceConfig = field(default_factory=HSpaceConfig)
    invert: InvertConfig = field(default_factory=InvertConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    optim: dict[str, Any] = field(default_factory=dict)
    edit: EditConfig = field(default_factory=EditConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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
