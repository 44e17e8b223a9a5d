"""The baselines' typed config: the frozen teacher, the prompt, the sampler and the edit/eval stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffedit_lab.methods.config import Component, EditEvalConfig, EditImagesConfig, PromptConfig
from diffedit_lab.utils.schema import ConfigError, bounds, target


@dataclass
class TextEditConfig:
    """What every text-guided baseline shares. ``resolution``: the size images are edited at (null = the
    teacher's native size, e.g. 512 for SD v1); results are resized back to the input size."""

    target: str = target()
    name: str
    teacher: Component
    clip: Component | None
    identity: Component | None
    prompt: PromptConfig
    resolution: int | None = field(metadata=bounds(ge=8))
    num_steps: int = field(metadata=bounds(ge=1, le=1000))
    guidance_scale: float = field(metadata=bounds(ge=0))
    seed: int = field(metadata=bounds(ge=0))
    edit: EditImagesConfig
    eval: EditEvalConfig


@dataclass
class SDEditConfig(TextEditConfig):
    """``strength`` α ∈ (0, 1]: the fraction of the DDIM schedule the image is noised to and denoised from."""

    strength: float = field(metadata=bounds(gt=0, le=1))
    eta: float = field(metadata=bounds(ge=0, le=1))


@dataclass
class DDIBConfig(TextEditConfig):
    """DDIM inversion conditioned on ``prompt.source_text`` (classifier-free guidance ``inversion_guidance``,
    1 = plain conditional ε, the usual choice since guided inversion drifts), then DDIM sampling with
    ``prompt.text`` at ``guidance_scale``."""

    inversion_guidance: float = field(metadata=bounds(ge=0))
    latent: Literal["mean", "sample"]  # VAE posterior mean (deterministic round trip) or a sample

    def check(self, key: str) -> None:
        if not self.prompt.source_text.strip():
            allowed = "DDIB inverts with the source text: set prompt.source_text (e.g. 'a photo of a face')"
            raise ConfigError(f"{key}.prompt.source_text", self.prompt.source_text, allowed)
