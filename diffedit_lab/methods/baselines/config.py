"""The baselines' typed config: the frozen teacher, the prompt, the sampler and the edit/eval stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffedit_lab.methods.config import Component, EditEvalConfig, PromptConfig
from diffedit_lab.utils.schema import ConfigError, bounds, target


@dataclass
class BaselineEditConfig:
    max_images: int | None = field(default=16, metadata=bounds(ge=1))  # the first N test images
    batch_size: int = field(default=4, metadata=bounds(ge=1))
    grid_columns: int = field(default=8, metadata=bounds(ge=1))
    grid_max: int = field(default=32, metadata=bounds(ge=0))


@dataclass
class TextEditConfig:
    """What every text-guided baseline shares. ``resolution``: the size images are edited at (null = the
    teacher's native size, e.g. 512 for SD v1); results are resized back to the input size."""

    target: str = target()
    name: str = "baseline"
    teacher: Component = field(default_factory=dict)
    clip: Component | None = None
    identity: Component | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    resolution: int | None = field(default=None, metadata=bounds(ge=8))
    num_steps: int = field(default=50, metadata=bounds(ge=1, le=1000))
    guidance_scale: float = field(default=7.5, metadata=bounds(ge=0))
    seed: int = field(default=0, metadata=bounds(ge=0))
    edit: BaselineEditConfig = field(default_factory=BaselineEditConfig)
    eval: EditEvalConfig = field(default_factory=EditEvalConfig)


@dataclass
class SDEditConfig(TextEditConfig):
    """``strength`` α ∈ (0, 1]: the fraction of the DDIM schedule the image is noised to and denoised from."""

    name: str = "sdedit"
    strength: float = field(default=0.5, metadata=bounds(gt=0, le=1))
    eta: float = field(default=0.0, metadata=bounds(ge=0, le=1))


@dataclass
class DDIBConfig(TextEditConfig):
    """DDIM inversion conditioned on ``prompt.source_text`` (classifier-free guidance ``inversion_guidance``,
    1 = plain conditional ε, the usual choice since guided inversion drifts), then DDIM sampling with
    ``prompt.text`` at ``guidance_scale``."""

    name: str = "ddib"
    inversion_guidance: float = field(default=1.0, metadata=bounds(ge=0))
    latent: Literal["mean", "sample"] = "mean"  # VAE posterior mean (deterministic round trip) or a sample

    def check(self, key: str) -> None:
        if not self.prompt.source_text.strip():
            allowed = "DDIB inverts with the source text: set prompt.source_text (e.g. 'a photo of a face')"
            raise ConfigError(f"{key}.prompt.source_text", self.prompt.source_text, allowed)
