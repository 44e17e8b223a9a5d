"""Stages and the context they run in — the part of the runner that knows no method.

A method declares its stages explicitly (``STAGES = (Stage("select", distributed=True), Stage("fit", train=True),
Stage("edit"), …)``). The runner walks them in order; for each stage the :class:`StageContext` builds the Trainer
it needs:

* a **training** stage gets its own Trainer (``max_steps`` from the method's ``<stage>.steps``, capped by
  ``trainer.max_steps`` when set), fresh callbacks from the ``callbacks`` group with its own checkpoint folder
  ``checkpoints/<stage>/``, and resumes from that folder on its own (``ckpt_path=last``);
* an **inference** stage goes through Lightning's predict loop (``trainer.predict``) with the callbacks the stage
  passes (image writers, metrics); rank-0 stages get a single-device Trainer, distributed ones the configured
  strategy.

Per-stage values reach the configured callbacks when the factory instantiates them: a callback config names the
constructor arguments it wants from the stage in ``_stage_`` (``{dirpath: checkpoint_dir, every_n_train_steps:
checkpoint_every}``; values: ``name``, ``checkpoint_dir``, ``checkpoint_every``, ``preview_every``, ``images_dir``) —
no global state, nothing to resolve outside a stage.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from diffedit_lab.callbacks.checkpoint_io import latest_checkpoint
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import atomic_json_dump


@dataclass(frozen=True)
class Stage:
    """One step of a method. ``train``: runs ``trainer.fit`` with its own Trainer and checkpoints.
    ``distributed``: runs on every DDP rank (training stages always do); otherwise rank 0 only.
    ``needs``: the method's component keys (e.g. ``generator``, ``teacher``) whose weight files the stage loads;
    the runner checks that those files exist before anything is built (a typo never costs a teacher load).
    ``outputs`` (training stages): the run-dir files/folders the stage exports when it finishes — with
    ``checkpoints/<name>/`` they are its finished output, never replaced without ``overwrite=true``; the first is
    what later invocations load. ``weights_key``: the method config key (dotted) naming a given file of this
    stage's product instead. ``uses``: the training stage whose product an inference stage loads (checked at
    start-up when that stage does not run in the same invocation)."""

    name: str
    train: bool = False
    distributed: bool = False
    default: bool = True  # part of the method's default sequence (``stage=null``)
    needs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    weights_key: str = "weights"
    uses: str | None = None
    product: str = ""  # what a training stage produces, in messages ("SDD mapper")

    def __post_init__(self) -> None:
        if self.train:
            object.__setattr__(self, "distributed", True)

    @property
    def export(self) -> tuple[str, ...]:
        """The export later invocations load, first under its name and then under the name older versions wrote
        (``x.safetensors`` was ``x.pt``: old run dirs still load)."""
        first = self.outputs[:1]
        return first + tuple(o.removesuffix(".safetensors") + ".pt" for o in first if o.endswith(".safetensors"))

    @property
    def finished(self) -> tuple[str, ...]:
        """Every file/folder that marks this stage as done in a run dir (``outputs`` and their old names)."""
        old = tuple(o.removesuffix(".safetensors") + ".pt" for o in self.outputs if o.endswith(".safetensors"))
        return self.outputs + old


class TrainingResult(dict):
    """The final values of a training stage's loop (what ``run_training`` returns): written as results they stay
    on their training curves' dashboard keys, apart from what the stage's later passes score under the same name
    (Rectifier's editor loss ``edit/l1`` vs the edit pass's ``edit/l1``)."""


def instantiate_all(group: DictConfig | None, stage_values: dict[str, Any] | None = None) -> list:
    """Instantiate every ``_target_`` entry of a callbacks/logger group (``none`` → []). An entry's ``_stage_``
    mapping (argument → key of ``stage_values``) passes that stage's values to its constructor."""
    if not group:
        return []
    out = []
    for node in group.values():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        wanted = node.get("_stage_")
        wanted = OmegaConf.to_container(wanted, resolve=True) if isinstance(wanted, DictConfig) else {}
        if wanted and stage_values is None:
            raise ValueError(f"{node._target_} takes per-stage values ({sorted(wanted)}): build it for a stage")
        node = node.copy()
        with open_dict(node):
            node.pop("_stage_", None)
        out.append(instantiate(node, **{arg: stage_values[key] for arg, key in wanted.items()}))
    return out


class FinalCheckpoint(Callback):
    """Writes ``<dir>/last.ckpt`` when a training stage ends on a step no periodic checkpoint covered, so
    ``ckpt_path=last`` always resumes the stage's final state (a finished stage then has nothing left to do)."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer, pl_module) -> None:
        last = self.dirpath / "last.ckpt"
        if trainer.global_step == 0 or trainer.fast_dev_run:
            return
        if last.is_file() and _saved_step(trainer, last) == trainer.global_step:
            return
        trainer.save_checkpoint(last)


def _saved_step(trainer, path: Path) -> int | None:
    for cb in trainer.checkpoint_callbacks:  # what ModelCheckpoint wrote last, without reading the file
        if getattr(cb, "last_model_path", None) and Path(cb.last_model_path) == path:
            return trainer.global_step if cb._last_global_step_saved == trainer.global_step else None
    return None


@dataclass
class StageContext:
    """What a stage may use: a Trainer factory, the datamodule, the run directory, the loggers, and the
    run's metrics (merged into ``metrics.json``)."""

    trainer_cfg: DictConfig
    callbacks_cfg: DictConfig | None
    datamodule: Any
    run_dir: Path
    loggers: list = field(default_factory=list)
    ckpt_path: str | None = None
    first_train_stage: str | None = None
    overwrite: bool = False  # overwrite=true: nested runs (a comparison's entries) may replace their outputs too
    metrics: dict[str, float] = field(default_factory=dict)
    trainer: Trainer | None = None  # the stage's current Trainer (set by the factory)

    # --- where things are ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The stage's Trainer's root device, or — before one exists — the device the configured accelerator
        gives this process (no Trainer is built to learn it)."""
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return configured_device(self.trainer_cfg)

    @property
    def global_rank(self) -> int:
        return launch_rank()

    def checkpoint_dir(self, stage: str) -> Path:
        return self.run_dir / "checkpoints" / stage

    def resume_path(self, stage: Stage) -> str | None:
        """``ckpt_path=last`` → the newest checkpoint of ``checkpoints/<stage>/`` (normally ``last.ckpt``) when one
        exists; an explicit path resumes the run's first training stage."""
        if self.ckpt_path is None:
            return None
        if self.ckpt_path == "last":
            newest = latest_checkpoint(self.checkpoint_dir(stage.name))
            return str(newest) if newest is not None else None
        return self.ckpt_path if stage.name == self.first_train_stage else None

    # --- trainers -------------------------------------------------------------------------------------------
    @staticmethod
    def _trainer_kwargs(cfg: DictConfig, **overrides: Any) -> dict[str, Any]:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.pop("max_steps", None)
            for k, v in overrides.items():
                cfg[k] = v
        return dict(instantiate(cfg, _partial_=True).keywords)

    def fit_trainer(
        self, stage: Stage, settings: Any, callbacks: Sequence = (), max_epochs: int | None = None, **overrides: Any
    ) -> Trainer:
        """A fresh Trainer for a training stage: its own max_steps, callbacks and checkpoint folder (the one
        factory every training stage goes through: :meth:`EditingMethod.run_training`)."""
        steps = int(settings.steps)
        cap = self.trainer_cfg.get("max_steps")
        if cap is not None and int(cap) >= 0:
            steps = min(steps, int(cap))
        values = {
            "name": stage.name,
            "checkpoint_dir": str(self.checkpoint_dir(stage.name)),
            "checkpoint_every": int(getattr(settings, "checkpoint_every", 0) or 0) or None,
            "preview_every": int(getattr(settings, "preview_every", 0) or 0),
            "images_dir": str(self.run_dir / "images" / stage.name),
        }
        configured = instantiate_all(self.callbacks_cfg, values)
        if not self.loggers:  # logger=none: the LR monitor has nowhere to write
            from lightning.pytorch.callbacks import LearningRateMonitor

            configured = [c for c in configured if not isinstance(c, LearningRateMonitor)]
        extra = overrides if max_epochs is None else {**overrides, "max_epochs": int(max_epochs)}
        self.trainer = Trainer(
            **self._trainer_kwargs(self.trainer_cfg, **extra),
            max_steps=steps,
            callbacks=[*configured, *callbacks, FinalCheckpoint(self.checkpoint_dir(stage.name))],
            logger=self.loggers or False,
        )
        return self.trainer

    def predict_trainer(self, stage: Stage, callbacks: Sequence = ()) -> Trainer:
        """A Trainer for an inference stage: the configured strategy when distributed, else one device.
        ``inference_mode`` is off so a stage may still optimise inside ``predict_step`` (e.g. a projector)."""
        overrides: dict[str, Any] = {"inference_mode": False, "enable_checkpointing": False}
        if not stage.distributed:
            overrides |= {"devices": 1, "num_nodes": 1, "strategy": "auto", "sync_batchnorm": False}
        self.trainer = Trainer(
            **self._trainer_kwargs(self.trainer_cfg, **overrides),
            callbacks=list(callbacks),
            logger=self.loggers or False,
        )
        return self.trainer

    # --- outputs ----------------------------------------------------------------------------------------------
    def write_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Merge into ``metrics.json`` (and ``metrics.csv``) of the run dir and send to every logger."""
        self.metrics.update(metrics)
        if self.global_rank != 0:
            return
        atomic_json_dump(self.metrics, self.run_dir / "metrics.json")
        with open(self.run_dir / "metrics.csv", "w") as f:
            f.write("metric,value\n")
            for k, v in sorted(self.metrics.items()):
                f.write(f"{k},{v}\n")
        trainer_step = self.trainer.global_step if self.trainer is not None else 0
        for logger in self.loggers:  # a stage's results: loggers that tell them from training curves get them so
            if hasattr(logger, "log_results"):
                logger.log_results(metrics, step, final=isinstance(metrics, TrainingResult))
            else:
                logger.log_metrics(metrics, step=step if step is not None else trainer_step)
            logger.save()

    def log_image(self, key: str, path: Path, caption: str | None = None) -> None:
        from diffedit_lab.utils.loggers import log_image_file

        if self.global_rank == 0:
            log_image_file(self.loggers, key, path, self.trainer.global_step if self.trainer else 0, caption)

    def log_table(self, key: str, rows: list[dict[str, Any]], line: tuple[str, Sequence[str]] | None = None) -> None:
        """Rows (dicts; ``Path``s and image tensors are pictures) as a table on the loggers that show tables;
        ``line=(x, [y, …])`` also plots those columns against ``x``."""
        from diffedit_lab.utils.loggers import log_rows

        if self.global_rank == 0:
            log_rows(self.loggers, key, rows, line)


def run_stages(method: Any, stages: Sequence[Stage], ctx: StageContext) -> dict[str, dict[str, float]]:
    """Walk ``stages`` of ``method`` on ``ctx`` — rank-0 stages on rank 0 only, each stage's wall time recorded as
    ``time/<stage>_s`` — and return what each stage returned. The one way stages run: a CLI run (``run(cfg)``,
    and so every comparison entry) and a nested run on objects in memory (SDFT's Asyrp edits of its EMA)."""
    import time

    from diffedit_lab.utils import loggers

    results: dict[str, dict[str, float]] = {}
    for stage in stages:
        if not stage.distributed and ctx.global_rank != 0:
            continue  # DDP workers re-run the script: rank-0 stages run once
        t0 = time.perf_counter()
        loggers.stage_started(ctx.loggers, stage)  # each stage's keys and step axis on the dashboards
        results[stage.name] = method.run_stage(stage, ctx) or {}
        ctx.write_metrics({f"time/{stage.name}_s": time.perf_counter() - t0})  # e.g. a method's training cost
        if ctx.global_rank == 0:
            loggers.stage_finished(ctx.loggers, stage, ctx.run_dir)  # its exports as model artifacts
    return results


def launch_rank() -> int:
    """This process's global rank as the launcher set it (0 when not a DDP worker), read from the environment in
    Lightning's order (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``) — no Trainer needed."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(key, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def configured_device(trainer_cfg: DictConfig) -> torch.device:
    """The root device the configured accelerator/devices give this process (Lightning's choice for rank 0 of a
    GPU run is the first listed device; a DDP worker takes the one at its ``LOCAL_RANK``)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not cuda:
        mps = accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available())
        return torch.device("mps") if mps else torch.device("cpu")
    devices = trainer_cfg.get("devices", "auto")
    ids: list[int] = []
    if isinstance(devices, str) and "," in devices:
        ids = [int(d) for d in devices.split(",") if d.strip()]
    elif not isinstance(devices, int | str):
        ids = [int(d) for d in devices]
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return torch.device("cuda", ids[local] if local < len(ids) else local)


def check_stages(declared: Sequence[Stage], requested: str | Sequence[str] | None, owner: str) -> list[Stage]:
    """The stages to run: the method's default sequence, or the requested names in the given order."""
    by_name = {s.name: s for s in declared}
    if requested is None:
        return [s for s in declared if s.default]
    names = [requested] if isinstance(requested, str) else list(requested)
    for n in names:
        if n not in by_name:
            raise UserError(f"stage={n}: method '{owner}' has no stage '{n}'; its stages are {list(by_name)}")
    return [by_name[n] for n in names]
