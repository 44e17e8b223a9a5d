"""The thin task runner: seed, instantiate, dispatch stages, save outputs, return the swept metric."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diffedit_lab.methods.base import StageContext
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import atomic_json_dump, atomic_write

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a callbacks/logger group (``none`` → [])."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def close_loggers() -> None:
    """Finish the W&B run so the next job of a multirun starts a fresh one, even after a failure."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:  # pragma: no cover - wandb is a dependency
        pass


def run(cfg: DictConfig) -> float | None:
    from lightning import seed_everything

    seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # a later invocation on the same run dir (hydra.run.dir=<old run>) keeps the first config next to its own
    config_file = run_dir / "config_resolved.yaml"
    if config_file.exists():
        config_file = run_dir / f"config_resolved_{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    atomic_write(config_file, lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    check_ddp_multirun(cfg)

    datamodule = instantiate(cfg.data)
    method = instantiate(cfg.method)
    stages = method.resolve_stages(
        OmegaConf.to_container(cfg.stage) if isinstance(cfg.stage, DictConfig | list) else cfg.stage
    )
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    if not loggers:  # logger=none: the LR monitor has nowhere to write
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ctx = StageContext(trainer=trainer, datamodule=datamodule, run_dir=run_dir, ckpt_path=ckpt_path)
    previous = run_dir / "metrics.json"
    if previous.is_file():  # stages run earlier on this run dir: merge, never drop their results
        ctx.metrics.update(json.loads(previous.read_text()))
    log.info("run dir: %s | stages: %s", run_dir, " → ".join(stages))
    try:
        for stage in stages:
            if stage not in ("select", "fit") and trainer.global_rank != 0:
                continue  # DDP workers re-run the script: inference stages run once, on rank 0
            method.run_stage(stage, ctx)
    finally:
        close_loggers()
    atomic_json_dump(ctx.metrics, run_dir / "metrics.json")
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in ctx.metrics:
        log.warning("optimized_metric '%s' not among the run's metrics %s", name, sorted(ctx.metrics))
        return float("nan")  # a failed trial for Optuna, not a crash of the whole study
    return float(ctx.metrics[name])


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` → this run dir's ``checkpoints/last.ckpt``; a missing file is an error, not a silent fresh start."""
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        hint = " (ckpt_path=last resumes the run dir given by hydra.run.dir=<old run>)" if ckpt_path == "last" else ""
        raise UserError(f"ckpt_path: no checkpoint at '{path}'{hint}")
    return str(path)


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
