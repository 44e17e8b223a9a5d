"""Start-up checks of the cross-cutting groups (trainer, data, ckpt_path): cheap, before any model is built.

The method's own options are checked by its ``Config`` schema (``methods/<m>/config.py``); here are the Trainer
keys users commonly set and the keys every datamodule shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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


def check_trainer(node: DictConfig) -> None:
    keys = {f: node.get(f) for f in TrainerKeys.__dataclass_fields__ if f in node}
    validate(TrainerKeys, keys, "trainer")


def check_data(node: DictConfig | None) -> None:
    if node is None:
        return
    keys = {f: node.get(f) for f in DataKeys.__dataclass_fields__ if f in node}
    validate(DataKeys, keys, "data")


def check_ckpt_path(ckpt_path: Any, run_dir: Path, train_stages: list[str]) -> str | None:
    """``last`` needs ``checkpoints/<stage>/last.ckpt`` for one of the training stages to run; a path must exist.
    A missing file is an error, not a silent fresh start."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        found = [s for s in train_stages if (run_dir / "checkpoints" / s / "last.ckpt").is_file()]
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


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def validate_method(cls: type, node: DictConfig) -> Any:
    """The method's ``Config`` schema applied to ``cfg.method`` (the method class is imported, nothing built)."""
    schema = getattr(cls, "Config", None)
    return validate(schema, node, "method") if schema is not None else node
