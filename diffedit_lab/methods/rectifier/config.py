"""The Rectifier's typed config (``conf/method/rectifier.yaml`` + ``conf/method/rectifier/*.yaml``), checked at
start-up: every option has a type, a range or a list of choices, and a wrong one is one line naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from diffedit_lab.evaluation.suite import EDIT, PAIRED
from diffedit_lab.methods.config import (
    Component,
    MetricSettings,
    PromptConfig,
    TrainStageConfig,
    check_metrics,
    check_optimizer,
)
from diffedit_lab.utils.schema import ConfigError, bounds, target

EPS_MSE = "eps_mse"  # the noise-prediction error on test images (our reading of the paper's ‖Δe‖²)
FP32_ONLY = (
    "expected fp32: in a half-precision U-Net the kernels θ·(1 + Δ) round away every |Δ| below 2^-12 (fp16) / "
    "2^-9 (bf16) of θ, the small offsets training starts from, and gradients through it get no loss scaling"
)
DIRECTION_STAGES = ("edit", "apply", "eval")  # the stages that may score or train an edit direction


@dataclass
class EncoderConfig:
    """torchvision ResNet trunk on concat(x₀, P_t) (ResNet-34 in ``conf/method/rectifier.yaml``)."""

    layers: list[int] = field(metadata=bounds(ge=1))
    widths: list[int] = field(metadata=bounds(ge=1))
    norm: Literal["batch", "group"]
    pretrained: str | None  # a local torchvision resnet34 ImageNet state dict; null = random init

    def check(self, key: str) -> None:
        for name in ("layers", "widths"):
            if len(getattr(self, name)) != 4:
                raise ConfigError(f"{key}.{name}", getattr(self, name), "expected 4 entries (one per ResNet stage)")
        if self.pretrained:
            if not Path(self.pretrained).expanduser().is_file():
                raise ConfigError(f"{key}.pretrained", self.pretrained, "no such file")
            if (self.layers, self.widths, self.norm) != ([3, 4, 6, 3], [64, 128, 256, 512], "batch"):
                raise ConfigError(f"{key}.pretrained", self.pretrained, "ImageNet weights need the ResNet-34 shape")


@dataclass
class NetConfig:
    layers: list[str]  # U-Net conv name globs
    subnet_channels: int = field(metadata=bounds(ge=1))
    time_dim: int = field(metadata=bounds(ge=2))
    clip_estimate: bool  # clamp P_t to [-1, 1] before the encoder
    init_seed: int = field(metadata=bounds(ge=0))  # the random init of a new rectifier
    encoder: EncoderConfig

    def check(self, key: str) -> None:
        if not self.layers:
            raise ConfigError(f"{key}.layers", self.layers, "expected at least one module-name pattern")
        if self.time_dim % 2:
            raise ConfigError(f"{key}.time_dim", self.time_dim, "expected an even number")


@dataclass
class LRDecayConfig:
    """StepLR: the learning rate is multiplied by ``gamma`` every ``every`` optimiser steps."""

    every: int = field(metadata=bounds(ge=1))
    gamma: float = field(metadata=bounds(gt=0, le=1))


@dataclass
class FitConfig(TrainStageConfig):
    """Stage 1 (reconstruction): ‖ε − ε_θ̂(x_t, t)‖², t ~ U{0..T−1} (the paper's Adam and StepLR settings are
    ``conf/method/rectifier.yaml``'s)."""

    optim: dict[str, Any]
    lr_decay: LRDecayConfig
    preview_t: int = field(metadata=bounds(ge=0, le=999))  # P_t grids (base vs rectified); < T
    preview_images: int = field(metadata=bounds(ge=1))

    def check(self, key: str) -> None:
        check_optimizer(f"{key}.optim", self.optim)


@dataclass
class SamplingConfig:
    """DDIM inversion of test images (``invert_with`` the rectified or the plain model) then DDIM sampling with
    the modulated model, ``steps`` each way (η = 0, no x₀ clipping: the round trip is exact up to the model)."""

    steps: int = field(metadata=bounds(ge=1, le=1000))
    invert_with: Literal["rectified", "base"]
    batch_size: int = field(metadata=bounds(ge=1))
    max_images: int | None = field(metadata=bounds(ge=1))  # first N test images (null = all)
    grid_columns: int = field(metadata=bounds(ge=1))
    grid_max: int = field(metadata=bounds(ge=0))


@dataclass
class ReconstructConfig(SamplingConfig):
    metrics: list[str]
    base: bool  # the plain base model on the same images, same steps: the other row of the table
    seed: int = field(metadata=bounds(ge=0))  # the ε of the eps_mse probe

    def check(self, key: str) -> None:
        wrong = [m for m in self.metrics if m not in (*PAIRED, EPS_MSE)]
        if wrong:
            raise ConfigError(f"{key}.metrics", self.metrics, f"'{wrong[0]}' is not one of {[*PAIRED, EPS_MSE]}")


@dataclass
class EditSampleConfig(SamplingConfig):
    metrics: list[str]

    def check(self, key: str) -> None:
        check_metrics(f"{key}.metrics", self.metrics)


@dataclass
class EditConfig(TrainStageConfig):
    """Stage 2 (Algorithm 1): x_t from the ORIGINAL trajectory of each training image, modulate with the editor,
    λ_clip·directional CLIP(P̃_t vs x₀) + λ_l1·‖P̃_t − x₀‖₁ (the paper's Adam and StepLR settings are
    ``conf/method/rectifier.yaml``'s)."""

    train_images: int | None = field(metadata=bounds(ge=1))  # first N of the train split (null = all)
    # scratch: Δ = 0 editor (the strategy-alone ablation); with sample.invert_with=base it needs no rectifier at all
    init: Literal["rectifier", "scratch"]
    lambda_clip: float = field(metadata=bounds(ge=0))
    lambda_l1: float = field(metadata=bounds(ge=0))
    timesteps: Literal["all", "schedule"]  # all: t ~ U{0..T−1}; schedule: the sample.steps DDIM grid
    optim: dict[str, Any]
    lr_decay: LRDecayConfig
    preview_t: int = field(metadata=bounds(ge=0, le=999))  # < T (checked again once the prior is built)
    preview_images: int = field(metadata=bounds(ge=1))
    sample: EditSampleConfig

    def check(self, key: str) -> None:
        check_optimizer(f"{key}.optim", self.optim)
        if self.lambda_clip == 0 and self.lambda_l1 == 0:
            raise ConfigError(f"{key}.lambda_clip", self.lambda_clip, "lambda_clip and lambda_l1 cannot both be 0")


@dataclass
class EvalConfig(MetricSettings):
    """``stage=eval``: ``folder.pred`` vs ``folder.ref`` (default: this run's ``edit/edited`` vs ``edit/source``);
    the metric settings below also serve ``reconstruct`` and ``edit``."""

    kid_subset_size: int = field(metadata=bounds(ge=2))


@dataclass
class RectifierConfig:
    target: str = target()
    name: str
    weights: str | None  # a trained rectifier (<run>/rectifier.safetensors or checkpoints/fit/*.ckpt)
    editor_weights: str | None  # a trained editor for stage apply (<run>/editor.safetensors or checkpoints/edit/*.ckpt)
    base: Component  # the frozen pretrained prior (prior=ddpm_celebahq …)
    base_dtype: str  # fp32 only (see FP32_ONLY): fp16/bf16/auto are refused at start-up
    clip: Component | None
    identity: Component | None
    prompt: PromptConfig
    apply: Literal["grouped", "vmap"]  # how per-sample kernels run on the shared U-Net (= STRATEGIES)
    seed: int = field(metadata=bounds(ge=0))
    net: NetConfig
    fit: FitConfig
    reconstruct: ReconstructConfig
    edit: EditConfig
    eval: EvalConfig

    def check(self, key: str) -> None:
        if not self.base.get("_target_"):
            raise ConfigError(f"{key}.base", self.base, "expected a pixel prior config (e.g. prior=ddpm_celebahq)")
        if self.base_dtype not in ("fp32", "float32"):
            raise ConfigError(f"{key}.base_dtype", self.base_dtype, FP32_ONLY)
        needs_clip = any(m in EDIT[:2] for m in (*self.edit.sample.metrics, *self.eval.folder.metrics))
        if (needs_clip or self.edit.lambda_clip > 0) and not (self.clip or {}).get("_target_"):
            raise ConfigError(f"{key}.clip", self.clip, "the edit stage and clip metrics need a CLIP config (clip=…)")

    def check_stage(self, key: str, stage: str) -> None:
        """Rules that hold only for some stages, checked at start-up for each requested one (before anything is
        built): the directional CLIP loss (edit) and metric (edit, apply, eval) need ``prompt.source_text`` (the
        prompt group already refuses an empty ``text``) — an empty one silently disabled the loss."""
        if stage not in DIRECTION_STAGES:
            return
        metrics = self.eval.folder.metrics if stage == "eval" else self.edit.sample.metrics
        uses = "the clip_dir metric" if "clip_dir" in metrics else None
        if stage == "edit" and self.edit.lambda_clip > 0:
            uses = "the directional CLIP loss (edit.lambda_clip > 0)"
        if uses is None:
            return
        if not self.prompt.source_text.strip():
            raise ConfigError(
                f"{key}.prompt.source_text",
                self.prompt.source_text,
                f"stage {stage}: {uses} needs a source text (e.g. prompt.source_text=face)",
            )
