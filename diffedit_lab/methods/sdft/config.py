"""SDFT's typed config (``conf/method/sdft.yaml`` + ``conf/method/sdft/*.yaml``), checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from diffedit_lab.evaluation.suite import PAIRED, UNPAIRED
from diffedit_lab.methods.config import (
    Component,
    MetricSettings,
    TrainStageConfig,
    check_metrics,
    check_optimizer,
)
from diffedit_lab.utils.schema import ConfigError, bounds, target

Weighting = Literal["p2", "min_snr", "constant"]
DecoderCDF = Literal["approx", "exact"]  # the normal CDF of L_vb's decoder NLL: guided-diffusion's tanh formula or Φ
StudentBatching = Literal["joint", "separate"]  # x_t and ε through the networks: one call each | two
EGSDEForm = Literal["official", "ddim_post_step"]  # EGSDE's own DDPM sampler | the energy step after each DDIM step


@dataclass
class LossConfig:
    """``L_simple + L_vb + λ·w_γ(t)·‖ε_T(x_t,t) − ε_S(x_t,t)‖² + λ'·w_γ'(t)·‖ε_T(ε,t) − ε_S(ε,t)‖²``.

    ``p2``: w = 1/(k + SNR)^γ; ``min_snr``: w = min(SNR, γ)/SNR (γ is the clip, 5 for Min-SNR-5); ``constant``: 1.
    """

    lambda_distill: float = field(metadata=bounds(ge=0))
    gamma_distill: float = field(metadata=bounds(ge=0))
    weighting_distill: Weighting
    lambda_aux: float = field(metadata=bounds(ge=0))
    gamma_aux: float = field(metadata=bounds(ge=0))
    weighting_aux: Weighting
    k: float = field(metadata=bounds(gt=0))
    simple: float = field(metadata=bounds(ge=0))  # weight of L_simple (1 in the paper)
    vb: bool  # add L_vb for learned-σ models (ignored for fixed-σ ones)
    decoder_cdf: DecoderCDF  # L_vb at t = 0; approx = the official code (tanh), exact = Φ
    student_batching: StudentBatching  # joint: one call on [x_t; ε]; separate: x_t, then ε (one backward)

    def check(self, key: str) -> None:
        for name in ("distill", "aux"):
            if getattr(self, f"weighting_{name}") == "min_snr" and getattr(self, f"gamma_{name}") <= 0:
                raise ConfigError(f"{key}.gamma_{name}", getattr(self, f"gamma_{name}"), "min_snr needs a clip > 0")


@dataclass
class EMAConfig:
    decay: float = field(metadata=bounds(ge=0, le=1))


@dataclass
class FitConfig(TrainStageConfig):
    preview_images: int = field(metadata=bounds(ge=1))  # EMA samples in the image grids
    # sample quality during training: every `fid_every` steps (0 = off), FID/KID of `fid_images` EMA samples (DDIM,
    # `fid_steps` steps; null = sample.steps) vs the target set; checkpoints/fit/best.ckpt keeps the best `fid_monitor`
    fid_every: int = field(metadata=bounds(ge=0))
    fid_images: int = field(metadata=bounds(ge=2))
    fid_steps: int | None = field(metadata=bounds(ge=1))
    fid_metrics: list[str]
    fid_monitor: Literal["fid", "kid"]

    def check(self, key: str) -> None:
        if self.fid_every > self.steps:
            raise ConfigError(
                f"{key}.fid_every",
                self.fid_every,
                f"larger than {key}.steps={self.steps}: no evaluation would run (0 = off)",
            )
        wrong = [m for m in self.fid_metrics if m not in UNPAIRED]
        if wrong or self.fid_monitor not in self.fid_metrics:
            raise ConfigError(
                f"{key}.fid_metrics", self.fid_metrics, f"expected a subset of {list(UNPAIRED)} holding fid_monitor"
            )


@dataclass
class SamplerConfig:
    """DDIM from the EMA model (``ema: false`` samples the raw student)."""

    steps: int = field(metadata=bounds(ge=1))
    eta: float = field(metadata=bounds(ge=0, le=1))  # 0: deterministic DDIM, 1: DDPM-like
    batch_size: int = field(metadata=bounds(ge=1))
    ema: bool
    clip_sample: bool | None  # null: the scheduler's own setting


@dataclass
class SampleConfig(SamplerConfig):
    num_images: int = field(metadata=bounds(ge=1))
    seed: int = field(metadata=bounds(ge=0))  # image i starts from the noise of seed + i
    grid_columns: int = field(metadata=bounds(ge=1))
    grid_max: int = field(metadata=bounds(ge=0))


@dataclass
class TranslateConfig(SamplerConfig):
    """SDEdit: noise source images to ``strength`` of the ``steps``-step DDIM schedule, then denoise."""

    source: Component | None  # an image datamodule (source domain, e.g. data=ffhq); its test split is used
    method: Literal["sdedit", "egsde"]  # egsde: + the energy guidance (needs stage train_classifier)
    strength: float = field(metadata=bounds(gt=0, le=1))  # 0.5 = the middle of the schedule
    max_images: int | None = field(metadata=bounds(ge=1))
    seed: int = field(metadata=bounds(ge=0))
    grid_columns: int = field(metadata=bounds(ge=1))
    grid_max: int = field(metadata=bounds(ge=0))


@dataclass
class EGSDEConfig:
    """EGSDE (:mod:`.egsde`): the step form, the energies' weights and the low-pass factor. λ_s = 500, λ_i = 2 and
    the factor 32 are EGSDE's (``profiles/*/args.py``: ls, li, down_N) and SDFT's (``notebooks/quant_EGSDE.ipynb``:
    ``egsde_kwargs = {"ls": 500, "li": 2}``, ``down_N = 32``); the start point and schedule are ``translate``'s
    (strength 0.5 of 40 steps: SDFT's ``ddim40`` respacing started at index 20 of 40; EGSDE's t = 500 of 1000)."""

    form: EGSDEForm
    realism_weight: float = field(metadata=bounds(ge=0))
    faithfulness_weight: float = field(metadata=bounds(ge=0))
    downsample: int = field(metadata=bounds(ge=1))
    steps: int | None = field(metadata=bounds(ge=1))  # schedule length; null = translate.steps
    repeats: int = field(metadata=bounds(ge=1))  # official form: EGSDE's sample_step (rerun on its output)
    classifier_weights: str | None  # default: <run>/domain_classifier.safetensors, then checkpoints/train_classifier

    def check(self, key: str) -> None:
        if self.form != "official" and self.repeats != 1:
            raise ConfigError(f"{key}.repeats", self.repeats, "only form=official repeats; expected 1")


@dataclass
class ClassifierConfig(TrainStageConfig):
    """``stage=train_classifier``: the domain classifier, source (``translate.source`` train split) vs target
    (``data`` train split) on noisy images."""

    lr: float = field(metadata=bounds(gt=0))
    channels: list[int] = field(metadata=bounds(ge=1))
    groups: int = field(metadata=bounds(ge=1))
    seed: int = field(metadata=bounds(ge=0))

    def check(self, key: str) -> None:
        if not self.channels or any(c % self.groups for c in self.channels):
            raise ConfigError(f"{key}.channels", self.channels, f"expected widths divisible by groups={self.groups}")


@dataclass
class EditConfig:
    """``stage=edit``: Asyrp (``method=<method>``) trained and evaluated on the fine-tuned EMA, once per prompt
    (a ``conf/prompt`` preset); ``overrides`` are that method's keys (e.g. ``method.eval.max_images=400``)."""

    method: str
    prompts: list[str]
    overrides: list[str]
    paper_dataset: Literal["metfaces", "aahq"] | None  # the Tab. 2 row printed beside ours

    def check(self, key: str) -> None:
        from diffedit_lab.utils.config import CONF_DIR

        if not self.prompts:
            raise ConfigError(f"{key}.prompts", self.prompts, "expected at least one prompt preset")
        presets = sorted(p.stem for p in (CONF_DIR / "prompt").glob("*.yaml"))
        wrong = [p for p in self.prompts if p not in presets]
        if wrong:
            raise ConfigError(
                f"{key}.prompts", self.prompts, f"'{wrong[0]}' is not a prompt preset; choose from {presets}"
            )
        if not (CONF_DIR / "method" / f"{self.method}.yaml").is_file():
            raise ConfigError(f"{key}.method", self.method, "expected a method config, e.g. asyrp or asyrp/tiny")


@dataclass
class EvalConfig(MetricSettings):
    """The paper's protocols: generation (FID/KID of ``generation_images`` samples vs the target set, LPIPS of
    ``pair_images`` source/fine-tuned pairs from the same noise) and translation (``translation_images`` SDEdit
    inputs: PSNR/SSIM/LPIPS vs the inputs, FID/KID vs the target set). A count of 0 skips that part."""

    generation_images: int = field(metadata=bounds(ge=0))
    pair_images: int = field(metadata=bounds(ge=0))
    translation_images: int = field(metadata=bounds(ge=0))
    target: Component | None  # the reference set of FID/KID (a data config); null = the training data
    target_split: Literal["train", "val", "test"]  # the target set FID/KID compare against
    max_target_images: int | None = field(metadata=bounds(ge=1))
    seed: int = field(metadata=bounds(ge=0))
    generation_metrics: list[str]
    pair_metrics: list[str]  # source vs fine-tuned sample, same noise
    translation_metrics: list[str]
    translation_methods: list[Literal["sdedit", "egsde"]]
    kid_subset_size: int = field(metadata=bounds(ge=2))

    def check(self, key: str) -> None:
        super().check(key)
        check_metrics(f"{key}.generation_metrics", self.generation_metrics)
        check_metrics(f"{key}.pair_metrics", self.pair_metrics)
        for name, allowed in (("generation_metrics", UNPAIRED), ("pair_metrics", PAIRED)):
            wrong = [m for m in getattr(self, name) if m not in allowed]
            if wrong:
                raise ConfigError(f"{key}.{name}", getattr(self, name), f"'{wrong[0]}' is not one of {list(allowed)}")
        check_metrics(f"{key}.translation_metrics", self.translation_metrics)


@dataclass
class SDFTConfig:
    target: str = target()
    name: str
    weights: str | None  # a trained run's sdft.safetensors or checkpoints/fit/*.ckpt for sample/translate/eval alone
    source: Component  # the pretrained prior: student init and frozen teacher
    init: Literal["source", "random"]  # random: the from-scratch baseline (same architecture)
    init_seed: int = field(metadata=bounds(ge=0))  # the random init (init=random)
    teacher_dtype: str  # auto: fp16 on GPU, fp32 on CPU
    seed: int = field(metadata=bounds(ge=0))  # t and ε of the training loss (checkpointed stream)
    loss: LossConfig
    ema: EMAConfig
    fit: FitConfig
    optim: dict[str, Any]
    sample: SampleConfig
    translate: TranslateConfig
    egsde: EGSDEConfig
    train_classifier: ClassifierConfig
    edit: EditConfig
    eval: EvalConfig

    def check(self, key: str) -> None:
        check_optimizer(f"{key}.optim", self.optim)
        if not self.source.get("_target_"):
            raise ConfigError(f"{key}.source", self.source, "expected a prior config (e.g. prior=adm_ffhq)")
        if self.teacher_dtype not in ("auto", "fp32", "float32", "fp16", "float16", "bf16", "bfloat16"):
            raise ConfigError(f"{key}.teacher_dtype", self.teacher_dtype, "expected auto, fp32, fp16 or bf16")

    @property
    def needs_teacher(self) -> bool:
        return self.loss.lambda_distill > 0 or self.loss.lambda_aux > 0
