"""SDD's typed config (``conf/method/sdd.yaml`` + ``conf/method/sdd/prompt/<name>.yaml``), checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from diffedit_lab.diffusion.schedule import WEIGHTINGS
from diffedit_lab.methods.config import (
    Component,
    FolderEvalConfig,
    PromptConfig,
    TrainStageConfig,
    check_fid_feature,
    check_metrics,
    check_optimizer,
)
from diffedit_lab.methods.sdd.selection import check_rule
from diffedit_lab.utils.schema import ConfigError, bounds, existing, target


@dataclass
class MapperConfig:
    levels: dict[str, bool]
    num_layers: int = field(metadata=bounds(ge=1))
    lr_mul: float = field(metadata=bounds(gt=0))
    edit_scale: float = field(metadata=bounds(gt=0))

    def check(self, key: str) -> None:
        unknown = set(self.levels) - {"coarse", "medium", "fine"}
        if unknown:
            raise ConfigError(f"{key}.levels", self.levels, "keys must be coarse, medium, fine")
        if not any(self.levels.values()):
            raise ConfigError(f"{key}.levels", self.levels, "enable at least one of coarse, medium, fine")


@dataclass
class CodesConfig:
    truncation: float = field(metadata=bounds(ge=0, le=2))


@dataclass
class GuidanceConfig:
    guidance_scale: float = field(metadata=bounds(ge=0))
    weighting: str
    topk: int | None = field(metadata=bounds(ge=1))
    noise: Literal["random", "zero"]
    negative_prompt: str

    def check(self, key: str) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"{key}.weighting", self.weighting, f"expected one of {sorted(WEIGHTINGS)}")


@dataclass
class LossConfig:
    sds: float = field(metadata=bounds(ge=0))
    latent_l2: float = field(metadata=bounds(ge=0))
    identity: float = field(metadata=bounds(ge=0))


@dataclass
class SelectionConfig:
    timesteps: list[int] = field(metadata=bounds(ge=0))
    num_codes: int = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    score: Literal["hqs", "entropy", "l1"]
    rule: str
    random_range: list[int] = field(metadata=bounds(ge=0))
    always_scan: bool
    cache: bool
    cache_dir: str | None
    seed: int | None
    scan_data: Any

    def check(self, key: str) -> None:
        if not self.timesteps:
            raise ConfigError(f"{key}.timesteps", self.timesteps, "expected at least one timestep")
        check_rule(self.rule, f"{key}.rule")
        if len(self.random_range) != 2 or self.random_range[0] > self.random_range[1]:
            raise ConfigError(f"{key}.random_range", self.random_range, "expected [a, b] with 0 <= a <= b")


@dataclass
class FitConfig(TrainStageConfig):
    t_sampling: Literal["uniform", "weighted"]
    preview_codes: int = field(metadata=bounds(ge=1))


@dataclass
class EditConfig:
    max_images: int | None = field(metadata=bounds(ge=1))
    photos: Component | None
    projector_steps: int = field(metadata=bounds(ge=0))
    projector_lr: float = field(metadata=bounds(gt=0))
    grid_columns: int = field(metadata=bounds(ge=1))
    grid_max: int = field(metadata=bounds(ge=0))


@dataclass
class EvalConfig:
    max_images: int | None = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    metrics: list[str]
    fid_feature: str | int
    fid_weights_path: str | None = field(metadata=existing())
    reference_dir: str | None = field(metadata=existing("folder"))  # images checked at start-up (check_eval)
    folder: FolderEvalConfig

    def check(self, key: str) -> None:
        check_metrics(f"{key}.metrics", self.metrics, extra=("latent_l2",))
        check_fid_feature(f"{key}.fid_feature", self.fid_feature)


@dataclass
class InvertConfig:
    """SDD on an image dataset: the projector that inverts each split into W+ (once; cached)."""

    steps: int = field(metadata=bounds(ge=1))
    lr: float = field(metadata=bounds(gt=0))
    batch_size: int = field(metadata=bounds(ge=1))
    seed: int = field(metadata=bounds(ge=0))
    cache_dir: str | None


@dataclass
class SDDConfig:
    target: str = target()
    name: str
    weights: str | None
    generator: Component
    teacher: Component
    clip: Component | None
    identity: Component | None
    prompt: PromptConfig
    mapper: MapperConfig
    codes: CodesConfig
    invert: InvertConfig
    guidance: GuidanceConfig
    loss: LossConfig
    selection: SelectionConfig
    fit: FitConfig
    optim: dict[str, Any]
    edit: EditConfig
    eval: EvalConfig

    def check(self, key: str) -> None:
        check_optimizer(f"{key}.optim", self.optim)
        gen_domain, prompt_domain = self.generator.get("domain", "any"), self.prompt.domain
        if "any" not in (gen_domain, prompt_domain) and gen_domain != prompt_domain:
            raise ConfigError(
                "prompt.domain",
                prompt_domain,
                f"prompt '{self.prompt.name}' is for the '{prompt_domain}' domain but the generator is '{gen_domain}';"
                " choose a matching generator=…",
            )
