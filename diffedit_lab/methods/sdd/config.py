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
from diffedit_lab.utils.schema import ConfigError, bounds, target


@dataclass
class MapperConfig:
    levels: dict[str, bool] = field(default_factory=lambda: {"coarse": False, "medium": True, "fine": False})
    num_layers: int = field(default=4, metadata=bounds(ge=1))
    lr_mul: float = field(default=0.01, metadata=bounds(gt=0))
    edit_scale: float = field(default=0.1, metadata=bounds(gt=0))

    def check(self, key: str) -> None:
        unknown = set(self.levels) - {"coarse", "medium", "fine"}
        if unknown:
            raise ConfigError(f"{key}.levels", self.levels, "keys must be coarse, medium, fine")
        if not any(self.levels.values()):
            raise ConfigError(f"{key}.levels", self.levels, "enable at least one of coarse, medium, fine")


@dataclass
class CodesConfig:
    truncation: float = field(default=0.7, metadata=bounds(ge=0, le=2))


@dataclass
class GuidanceConfig:
    guidance_scale: float = field(default=100.0, metadata=bounds(ge=0))
    weighting: str = "one_minus_alpha"
    topk: int | None = field(default=1024, metadata=bounds(ge=1))
    noise: Literal["random", "zero"] = "random"
    negative_prompt: str = ""

    def check(self, key: str) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"{key}.weighting", self.weighting, f"expected one of {sorted(WEIGHTINGS)}")


@dataclass
class LossConfig:
    sds: float = field(default=1.0, metadata=bounds(ge=0))
    latent_l2: float = field(default=10.0, metadata=bounds(ge=0))
    identity: float = field(default=1.0, metadata=bounds(ge=0))


@dataclass
class SelectionConfig:
    timesteps: list[int] = field(default_factory=lambda: list(range(100, 901, 50)), metadata=bounds(ge=0))
    num_codes: int = field(default=200, metadata=bounds(ge=1))
    batch_size: int = field(default=4, metadata=bounds(ge=1))
    score: Literal["hqs", "entropy", "l1"] = "hqs"
    rule: str = "max"
    random_range: list[int] = field(default_factory=lambda: [20, 980], metadata=bounds(ge=0))
    always_scan: bool = False
    cache: bool = True
    cache_dir: str | None = None
    seed: int | None = None
    scan_data: Any = None

    def check(self, key: str) -> None:
        if not self.timesteps:
            raise ConfigError(f"{key}.timesteps", self.timesteps, "expected at least one timestep")
        check_rule(self.rule, f"{key}.rule")
        if len(self.random_range) != 2 or self.random_range[0] > self.random_range[1]:
            raise ConfigError(f"{key}.random_range", self.random_range, "expected [a, b] with 0 <= a <= b")


@dataclass
class FitConfig(TrainStageConfig):
    t_sampling: Literal["uniform", "weighted"] = "uniform"
    preview_codes: int = field(default=4, metadata=bounds(ge=1))


@dataclass
class EditConfig:
    max_images: int | None = field(default=16, metadata=bounds(ge=1))
    photos: Component | None = None
    projector_steps: int = field(default=500, metadata=bounds(ge=0))
    projector_lr: float = field(default=0.1, metadata=bounds(gt=0))
    grid_columns: int = field(default=8, metadata=bounds(ge=1))
    grid_max: int = field(default=32, metadata=bounds(ge=0))


@dataclass
class EvalConfig:
    max_images: int | None = field(default=100, metadata=bounds(ge=1))
    batch_size: int = field(default=8, metadata=bounds(ge=1))
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "clip_dir", "identity", "latent_l2"])
    fid_feature: str | int = "inception"
    fid_weights_path: str | None = None
    reference_dir: str | None = None
    folder: FolderEvalConfig = field(default_factory=FolderEvalConfig)

    def check(self, key: str) -> None:
        check_metrics(f"{key}.metrics", self.metrics, extra=("latent_l2",))
        check_fid_feature(f"{key}.fid_feature", self.fid_feature)


@dataclass
class InvertConfig:
    """SDD on an image dataset: the projector that inverts each split into W+ (once; cached)."""

    steps: int = field(default=500, metadata=bounds(ge=1))
    lr: float = field(default=0.1, metadata=bounds(gt=0))
    batch_size: int = field(default=8, metadata=bounds(ge=1))
    seed: int = field(default=0, metadata=bounds(ge=0))
    cache_dir: str | None = None


@dataclass
class SDDConfig:
    target: str = target()
    name: str = "sdd"
    weights: str | None = None
    generator: Component = field(default_factory=dict)
    teacher: Component = field(default_factory=dict)
    clip: Component | None = None
    identity: Component | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    codes: CodesConfig = field(default_factory=CodesConfig)
    invert: InvertConfig = field(default_factory=InvertConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    optim: dict[str, Any] = field(default_factory=dict)
    edit: EditConfig = field(default_factory=EditConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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
