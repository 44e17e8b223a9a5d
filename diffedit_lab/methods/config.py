"""Config schemas every method shares: the text prompt, a training stage's loop settings, folder evaluation.

Each method's own schema (e.g. ``methods/sdd/config.py``) is a dataclass built from these pieces and is checked by
``diffedit_lab.utils.schema.validate`` at start-up, before any model is built.

A schema types and bounds every key but states no default: ``conf/method/<m>.yaml`` is the one place defaults live
(what ``--cfg job`` prints and overrides change), so every field is required and a key the YAML lacks is a one-line
error. Python callers get a method's defaults with ``diffedit_lab.utils.config.method_settings``.
``tests/test_configs.py`` keeps it so: no schema field that the YAML sets may carry a default.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

from diffedit_lab.evaluation.suite import ALL_METRICS
from diffedit_lab.utils.schema import ConfigError, bounds, existing

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
    fid_weights_path: str | None = field(metadata=existing())
    lpips_backbone_path: str | None = field(metadata=existing())

    def check(self, key: str) -> None:
        check_metrics(f"{key}.metrics", self.metrics)
        check_fid_feature(f"{key}.fid_feature", self.fid_feature)
        if bool(self.pred) != bool(self.ref):  # one alone was ignored, or stopped only when stage eval ran
            given, other = ("pred", "ref") if self.pred else ("ref", "pred")
            raise ConfigError(
                f"{key}.{other}",
                getattr(self, other),
                f"set it too ({key}.{given} is set): eval scores the folder "
                "pred (edited images) against the folder ref (their sources); give both or neither",
            )


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


def _importable(dotted: str) -> bool:
    """``a.b.C`` names an object: its longest importable module prefix, then attributes (no logging)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - a module failing at import is not importable either
            return False
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def check_optimizer(key: str, optim: dict[str, Any]) -> None:
    """A ``_partial_`` optimiser node: an importable target, and finite lr > 0 / weight_decay >= 0 when given
    (``nan`` passes ``<= 0``: refused here, not by the optimiser's constructor when training starts)."""
    target = optim.get("_target_")
    if not target:
        raise ConfigError(f"{key}._target_", None, "expected an optimiser class, e.g. torch.optim.AdamW")
    if not _importable(str(target)):
        raise ConfigError(f"{key}._target_", target, "cannot import it; expected e.g. torch.optim.AdamW")
    lr = optim.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf):
        raise ConfigError(f"{key}.lr", lr, "expected a finite number > 0")
    wd = optim.get("weight_decay")
    if wd is not None and (isinstance(wd, bool) or not isinstance(wd, int | float) or not 0 <= wd < math.inf):
        raise ConfigError(f"{key}.weight_decay", wd, "expected a finite number >= 0")


@dataclass
class EditImagesConfig:
    """``edit`` of the shared edit pass (:mod:`diffedit_lab.methods.editing`): the first ``max_images`` test
    images (null = all), ``batch_size`` at a time, and a before/after grid of up to ``grid_max`` pairs."""

    max_images: int | None = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    grid_columns: int = field(metadata=bounds(ge=1))
    grid_max: int = field(metadata=bounds(ge=0))


@dataclass
class MetricSettings:
    """What a method's metric suites are built with (``EditingMethod.metric_suite``: FID features and weights, the
    LPIPS backbone), and the folder pair its ``eval`` may score instead — every method's ``eval`` has these."""

    fid_feature: str | int
    fid_weights_path: str | None = field(metadata=existing())
    lpips_backbone_path: str | None = field(metadata=existing())
    folder: FolderEvalConfig

    def check(self, key: str) -> None:
        check_fid_feature(f"{key}.fid_feature", self.fid_feature)


@dataclass
class EditEvalConfig(MetricSettings):
    """``eval`` of an editing method: metrics over the first ``max_images`` test images (edited as in ``edit``), or
    any folder pair (``folder.pred``/``folder.ref``)."""

    max_images: int | None = field(metadata=bounds(ge=1))
    batch_size: int = field(metadata=bounds(ge=1))
    metrics: list[str]

    def check(self, key: str) -> None:
        super().check(key)
        check_metrics(f"{key}.metrics", self.metrics)
