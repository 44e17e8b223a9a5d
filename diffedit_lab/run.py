"""The thin task runner: check the config, seed, instantiate, walk the method's stages, return what was built.

It knows no method: the method (``cfg.method._target_``) declares its stages and its config schema; the runner
validates everything cheap first (method schema, trainer and data keys, ``ckpt_path``), then builds the datamodule,
the method and the loggers, and runs each requested stage with a :class:`StageContext` that hands out Trainers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffedit_lab import checks
from diffedit_lab.methods.preflight import Preflight, move_aside
from diffedit_lab.methods.stage import StageContext, check_stages, instantiate_all, run_stages
from diffedit_lab.utils import loggers as logger_hooks
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import atomic_json_dump, atomic_write

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``run`` built and measured; ``value`` is the swept metric (``optimized_metric``)."""

    value: float | None
    metrics: dict[str, float]
    objects: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # what each stage returned, by name


def close_loggers(loggers: list | None = None) -> None:
    """Finish the W&B run this run started (a run nested in another, e.g. a comparison's, leaves its parent's
    open), so the next job of a multirun starts a fresh one, even after a failure."""
    knows_wandb = (hasattr(lg, "finish_run") or type(lg).__name__ == "WandbLogger" for lg in loggers or ())
    if loggers is not None and not any(knows_wandb):
        return
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:  # pragma: no cover - wandb is a dependency
        pass


def build_method(node: DictConfig):
    """The method of ``cfg.method``, its config validated (what ``run`` builds; handy in tests and notebooks)."""
    return method_class_of(node).from_config(node)


def method_class_of(node: DictConfig) -> type:
    target = node.get("_target_")
    try:
        return get_class(target)
    except Exception as exc:
        raise UserError(f"method._target_={target!r}: cannot import it ({type(exc).__name__})") from None


@dataclass
class Plan:
    """A run checked and ready: every value validated, every requested stage's start-up checks passed, nothing
    built, nothing written (``doomed``: finished outputs ``overwrite=true`` will move aside)."""

    cls: type
    method_cfg: Any
    stages: list
    run_dir: Path
    ckpt_path: str | None
    datamodule: Any
    overwrite: bool
    doomed: list[Path]

    @property
    def train_stages(self) -> list[str]:
        return [s.name for s in self.stages if s.train]


def prepare(cfg: DictConfig, check_data: bool = True) -> Plan:
    """Every start-up check of ``cfg`` — method schema, trainer and data keys, stages, ``ckpt_path``, weight
    files, the data, and each requested stage's own checks — before anything is built or written. A comparison
    calls it for each entry before the first runs (``check_data=False`` for data another entry produces)."""
    cls = method_class_of(cfg.method)
    method_cfg = checks.validate_method(cls, cfg.method)
    checks.check_trainer(cfg.trainer)
    checks.check_data(cfg.get("data"))
    checks.check_data_options(cfg.get("data"))
    requested = cfg.stage
    if isinstance(requested, DictConfig | ListConfig):
        requested = OmegaConf.to_container(requested)
    stages = check_stages(cls.STAGES, requested, cfg.method.get("name", cls.__name__))
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = checks.check_ckpt_path(cfg.get("ckpt_path"), run_dir, [s.name for s in stages if s.train])
    check_ddp_multirun(cfg)
    logger_hooks.check_loggers(cfg.get("logger"))
    checks.check_random_weights(cfg.get("random_weights", False))
    checks.check_component_files(cfg, sorted({n for s in stages for n in cls.stage_needs(s, method_cfg)}))
    overwrite = checks.check_overwrite(cfg.get("overwrite", False))
    datamodule = instantiate(cfg.data) if cfg.get("data") is not None and check_data else None
    if datamodule is not None and hasattr(datamodule, "preflight"):
        datamodule.preflight()  # roots, list files and at least one image: still nothing built, nothing written
    pre = Preflight(run_dir, stages, cls.STAGES, datamodule, ckpt_path, overwrite)
    doomed = cls.check_stages(method_cfg, pre)  # every requested stage's checks, before the first one starts
    return Plan(cls, method_cfg, stages, run_dir, ckpt_path, datamodule, overwrite, doomed)


def run(cfg: DictConfig) -> RunResult:
    from lightning import seed_everything

    plan = prepare(cfg)  # cheap checks first: nothing is built until every value is known to be valid
    cls, method_cfg, stages, run_dir, datamodule = plan.cls, plan.method_cfg, plan.stages, plan.run_dir, plan.datamodule
    ckpt_path, train_stages = plan.ckpt_path, plan.train_stages

    seed_everything(int(cfg.seed), workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    move_aside(plan.doomed)  # overwrite=true: a finished stage's output is renamed, never deleted
    # a later invocation on the same run dir (hydra.run.dir=<old run>) keeps the first config next to its own
    config_file = run_dir / "config_resolved.yaml"
    if config_file.exists():
        config_file = run_dir / f"config_resolved_{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    atomic_write(config_file, lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))

    method = cls(method_cfg)
    loggers = instantiate_all(cfg.get("logger"))
    ctx = StageContext(
        trainer_cfg=cfg.trainer,
        callbacks_cfg=cfg.get("callbacks"),
        datamodule=datamodule,
        run_dir=run_dir,
        loggers=loggers,
        ckpt_path=ckpt_path,
        first_train_stage=train_stages[0] if train_stages else None,
        overwrite=plan.overwrite,
    )
    previous = run_dir / "metrics.json"
    if previous.is_file():  # stages run earlier on this run dir: merge, never drop their results
        ctx.metrics.update(json.loads(previous.read_text()))
    if cfg.get("random_weights", False):  # recorded beside the results, never silent
        log.warning("random_weights=true: every pretrained component has random weights; results are meaningless")
        ctx.metrics["run/random_weights"] = 1.0
    log.info("run dir: %s | stages: %s", run_dir, " → ".join(s.name for s in stages))
    if ctx.global_rank == 0:
        logger_hooks.begin_run(loggers, cfg, [s.name for s in stages], method)  # config, group, name, job type
    try:
        results = run_stages(method, stages, ctx)
        if ctx.global_rank == 0:
            atomic_json_dump(ctx.metrics, run_dir / "metrics.json")
    finally:
        failed = sys.exc_info()[0] is not None  # the W&B run is marked failed, its results still filed
        if ctx.global_rank != 0 or not logger_hooks.finish_run(loggers, run_dir, method, failed):
            close_loggers(loggers)
    objects = {"method": method, "datamodule": datamodule, "loggers": loggers, "context": ctx, "stages": stages}
    return RunResult(_swept_value(cfg, ctx.metrics), dict(ctx.metrics), objects, results)


def _swept_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        log.warning("optimized_metric '%s' not among the run's metrics %s", name, sorted(metrics))
        return float("nan")  # a failed trial for Optuna, not a crash of the whole study
    return float(metrics[name])


def check_ddp_multirun(cfg: DictConfig) -> None:
    """Lightning's script-relaunching DDP re-runs ``sys.argv``: inside a local ``-m`` sweep every rank would
    relaunch the whole sweep. Refuse it with the two setups that work."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        multirun = False
    strategy = str(cfg.trainer.get("strategy", "auto"))
    devices = cfg.trainer.get("devices", 1)
    many = devices in (-1, "auto") or (isinstance(devices, int) and devices > 1) or isinstance(devices, list | str)
    if (
        multirun
        and strategy.startswith("ddp")
        and strategy not in ("ddp_spawn", "ddp_fork")
        and many
        and not (os.environ.get("SLURM_NTASKS"))
    ):
        raise UserError(
            "trainer.strategy=ddp inside a local -m sweep relaunches the whole sweep on every rank; use "
            "trainer.strategy=ddp_spawn, or hydra/launcher=slurm with tasks_per_node=<devices>"
        )
