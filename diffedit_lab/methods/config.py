"""Config schemas every method shares: the text prompt, a training stage's loop settings, folder evaluation.

Each method's own schema (e.g. ``methods/sdd/config.py``) is a dataclass built from these pieces and is checked by
``diffedit_lab.utils.schema.validate`` at start-up, before any model is built.

A schema types and bounds every key but states no default: ``conf/method/<m>.yaml`` is the one place defaults live
(what ``--cfg job`` prints and overrides change), so every field is required and a key the YAML lacks is a one-line
error. Python callers get a method's defaults with ``diffedit_lab.utils.config.method_settings``.
``tests/test_configs.py`` keeps it so: no schema field that the YAML sets may carry a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffedit_lab.evaluation.suite import ALL_METRICS
from diffedit_lab.utils.schema import ConfigError, bounds

Component = dict[str, Any]  # a Hydra `_target_` node (generator, prior, CLIP, …), instantiated lazily


@dataclass
class PromptConfig:
    """The shared ``prompt`` group: what every text-guided method reads (SDD, Rectifier, SDEdit/DDIB)."""

    name: str
    text: str
    source_text: str
    domain: str

    def check(self, key: str) -> None:
        if not self.text.strip():
            raise ConfigError(
                f"{key}.text", self.text, 'must not be empty: pick a preset (prompt=angry) or set prompt.text="..."'
            )


@dataclass
class TrainStageConfig:
    """A training stage's own loop: its Trainer gets ``max_steps=steps`` and writes ``checkpoints/<stage>/``."""

    steps: int = field(metadata=bounds(ge=1))
    checkpoint_every: int = field(metadata=bounds(ge=1))
    preview_every: int = field(metadata=bounds(ge=0))  # image grids every N steps (0 = off)


@dataclass
class FolderEvalConfig:
    """``stage=eval`` on any two folders of images (``pred`` scored against ``ref``)."""

    pred: str | None
    ref: str | None
    metrics: list[str]
    resolution: int = field(metadata=bounds(ge=8))
    batch_size: int = field(metadata=bounds(ge=1))
    fid_feature: str | int
    fid_weights_path: str | None
    lpips_backbone_path: str | None

    def check(self, key: str) -> None:
        check_metrics(f"{key}.metrics", self.metrics)
        check_fid_feature(f"{key}.fid_feature", self.fid_feature)


def check_metrics(key: str, metrics: list[str], extra: tuple[str, ...] = ()) -> None:
    allowed = list(ALL_METRICS) + list(extra)
    for m in metrics:
        if m not in allowed:
            raise ConfigError(key, metrics, f"unknown metric '{m}'; choose from {allowed}")


def check_fid_feature(key: str, feature: str | int) -> None:
    """``inception``, ``tiny`` (tests/demo) or an Inception feature size: what FID/KID can be built from."""
    from diffedit_lab.evaluation.fid import INCEPTION_DIMS

    ok = feature in ("inception", "tiny") or (
        not isinstance(feature, bool) and str(feature) in map(str, INCEPTION_DIMS)
    )
    if not ok:
        raise ConfigError(key, feature, f"expected 'inception', 'tiny' or one of {list(INCEPTION_DIMS)}")


def check_optimizer(key: str, optim: dict[str, Any]) -> None:
    """A ``_partial_`` optimiser node: a target, and lr > 0 / weight_decay >= 0 when given."""
    if not optim.get("_target_"):
        raise ConfigError(f"{key}._target_", None, "expected an optimiser class, e.g. torch.optim.AdamW")
    lr = optim.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError(f"{key}.lr", lr, "expected a number > 0")
    wd = optim.get("weight_decay")
    if wd is not None and (isinstance(wd, bool) or not isinstance(wd, int | float) or wd < 0):
        raise ConfigError(f"{key}.weight_decay", wd, "expected a number >= 0")


@dataclass
class EditEvalConfig:
    """``eval`` of an editing method: metrics over the first ``max_images`` test images (edited as in ``edit``), or
    any folder pair (``folder.pred``/``folder.ref``)."""

    max_images: int | None = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    metrics: list[str]
    fid_feature: str | int
    fid_weights_path: str | None
    lpips_backbone_path: str | None
    folder: FolderEvalConfig

    def check(self, key: str) -> None:
        check_metrics(f"{key}.metrics", self.metrics)
        check_fid_feature(f"{key}.fid_feature", self.fid_feature)
