"""Start-up checks of the cross-cutting groups (trainer, data, ckpt_path): cheap, before any model is built.

The method's own options are checked by its ``Config`` schema (``methods/<m>/config.py``); here are the Trainer
keys users commonly set and the keys every datamodule shares.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffedit_lab.callbacks.checkpoint_io import latest_checkpoint
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.schema import ConfigError, bounds, validate

PRECISIONS = ["64", "64-true", "32", "32-true", "16", "16-mixed", "16-true", "bf16", "bf16-mixed", "bf16-true",
              "transformer-engine", "transformer-engine-float16"]  # fmt: skip
ACCELERATORS = ["auto", "cpu", "gpu", "cuda", "mps", "tpu"]


@dataclass
class TrainerKeys:
    devices: int | str | list[int] = 1
    num_nodes: int = field(default=1, metadata=bounds(ge=1))
    accelerator: str = "auto"
    precision: str | int = "32-true"
    max_steps: int | None = None
    accumulate_grad_batches: int = field(default=1, metadata=bounds(ge=1))
    log_every_n_steps: int = field(default=10, metadata=bounds(ge=1))
    gradient_clip_val: float | None = field(default=None, metadata=bounds(ge=0))

    def check(self, key: str) -> None:
        d = self.devices
        if isinstance(d, int) and d < 1 and d != -1:
            raise ConfigError(f"{key}.devices", d, "expected a count >= 1, -1 (all), 'auto' or a list of indices")
        if isinstance(d, str) and d != "auto" and not all(p.strip().lstrip("-").isdigit() for p in d.split(",")):
            raise ConfigError(f"{key}.devices", d, "expected a count >= 1, -1 (all), 'auto' or a list of indices")
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(f"{key}.precision", self.precision, f"expected one of {PRECISIONS}")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"{key}.accelerator", self.accelerator, f"expected one of {ACCELERATORS}")
        if self.max_steps is not None and self.max_steps < 1 and self.max_steps != -1:
            raise ConfigError(f"{key}.max_steps", self.max_steps, "expected null (each stage's own), -1, or >= 1")


@dataclass
class DataKeys:
    batch_size: int | None = field(default=None, metadata=bounds(ge=1))
    eval_batch_size: int | None = field(default=None, metadata=bounds(ge=1))
    num_workers: int | None = field(default=None, metadata=bounds(ge=0))
    resolution: int | list[int] | None = field(default=None, metadata=bounds(ge=8))
    max_images: int | None = field(default=None, metadata=bounds(ge=1))
    root: str | None = None
    hflip: bool = False
    pin_memory: bool | None = None  # null: when CUDA is available

    def check(self, key: str) -> None:
        if self.root is not None and not self.root.strip():  # '' is the current directory (bundled samples land there)
            raise ConfigError(f"{key}.root", self.root, "expected a folder (or null where the dataset needs none)")


def check_trainer(node: DictConfig) -> None:
    keys = {f: node.get(f) for f in TrainerKeys.__dataclass_fields__ if f in node}
    validate(TrainerKeys, keys, "trainer")


def check_data(node: DictConfig | None, key: str = "data") -> None:
    """The keys every datamodule shares (``DataKeys``) of ``data``, or of a data config a method option holds
    (``key``: e.g. ``method.edit.photos``)."""
    if node is None:
        return
    keys = {f: node.get(f) for f in DataKeys.__dataclass_fields__ if f in node}
    validate(DataKeys, keys, key)


def check_ckpt_path(ckpt_path: Any, run_dir: Path, train_stages: list[str]) -> str | None:
    """``last`` needs ``checkpoints/<stage>/last.ckpt`` for one of the training stages to run; a path must exist.
    A missing file is an error, not a silent fresh start."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        found = [s for s in train_stages if latest_checkpoint(run_dir / "checkpoints" / s) is not None]
        if not found:
            where = run_dir / "checkpoints" / (train_stages[0] if train_stages else "<stage>") / "last.ckpt"
            raise UserError(
                f"ckpt_path=last: no checkpoint at '{where}' (ckpt_path=last resumes the run dir given by "
                "hydra.run.dir=<old run>)"
            )
        return "last"
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path: no checkpoint at '{path}'")
    return str(path)


def check_overwrite(value: Any) -> bool:
    """``overwrite`` must be a boolean: it decides whether finished outputs are moved aside."""
    if not isinstance(value, bool):
        raise ConfigError("overwrite", value, "expected true or false")
    return value


def check_random_weights(value: Any) -> bool:
    """``random_weights`` must be a boolean: true builds every pretrained component at its released shape with
    random weights (:mod:`diffedit_lab.models.real_shapes`); a string such as ``'false'`` would be truthy."""
    if not isinstance(value, bool):
        raise ConfigError("random_weights", value, "expected true or false")
    return value


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def validate_method(cls: type, node: DictConfig) -> Any:
    """The method's ``Config`` schema applied to ``cfg.method`` (the method class is imported, nothing built)."""
    schema = getattr(cls, "Config", None)
    return validate(schema, node, "method") if schema is not None else node


def check_data_options(node: DictConfig | None, key: str = "data") -> None:
    """Every key of ``data`` (or of the data config at ``key``) must be an argument of its datamodule class: a
    preset's key that another dataset has no use for (e.g. ``data.num_test`` of the latent codes with
    ``data=celebahq``) stops with one line."""
    if node is None or "_target_" not in node:
        return
    from hydra.utils import get_class

    try:
        cls = get_class(str(node._target_))
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error here
        raise UserError(f"{key}._target_={node._target_!r}: cannot import it ({type(exc).__name__})") from None
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(k for k in params if k != "self")
    for name in node:
        if str(name).startswith("_") or name in params:
            continue
        raise ConfigError(
            f"{key}.{name}",
            node._get_node(name)._value() if node._get_node(name) is not None else None,
            f"not an option of {cls.__name__} (this data config); it takes {allowed}",
        )


_WEIGHT_KEYS = ("checkpoint", "source", "weights", "path")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".pkl", ".bin")


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value.lower().endswith(_WEIGHT_SUFFIXES)


def _user_key(cfg: DictConfig, name: str) -> str:
    """How the user spells the component: ``generator`` for ``method.generator: ${generator}``."""
    raw = cfg.method._get_node(name)._value() if cfg.method._get_node(name) is not None else None
    if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}"):
        return raw[2:-1]
    return f"method.{name}"


def check_component_files(cfg: DictConfig, names: list[str]) -> None:
    """The weight files of the components the requested stages load (``Stage.needs``) must exist — checked
    before any model is built. Hub ids and unset values are left to the component's own loader. A component with
    ``random_weights: true`` reads no file: its released architecture must be known instead (a prior's source)."""
    for name in names:
        node = cfg.method.get(name)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if "random_weights" in node:
            where = f"{_user_key(cfg, name)}.random_weights"
            if _check_random_component(node, where):
                continue
        for key in _WEIGHT_KEYS:
            value = node.get(key)
            if not isinstance(value, str) or not value or not _looks_local(value):
                continue
            if not Path(value).expanduser().exists():
                raise UserError(f"{_user_key(cfg, name)}.{key}={value}: no such file or folder")


def _check_random_component(node: DictConfig, where: str) -> bool:
    """A component's ``random_weights`` is a boolean; when true, a prior's source must name a released
    architecture (:mod:`diffedit_lab.models.real_shapes`). True when the component will not read its weights."""
    value = node.get("random_weights")
    if not isinstance(value, bool):
        raise ConfigError(where, value, "expected true or false")
    if not value:
        return False
    from diffedit_lab.models import real_shapes

    target = str(node.get("_target_"))
    lookup = {
        "UnconditionalPrior.from_pretrained": real_shapes.pixel_prior_shape,
        "StableDiffusionPrior.from_pretrained": real_shapes.sd_prior_shape,
    }
    for suffix, find in lookup.items():
        if target.endswith(suffix):
            try:
                find(str(node.get("source")))
            except UserError as exc:
                key = where.removesuffix(".random_weights") + ".source"
                raise UserError(f"{key}={node.get('source')}: {exc}") from None
    return True
