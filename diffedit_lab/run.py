"""The thin task runner: seed, instantiate, dispatch stages, save outputs, return the swept metric."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diffedit_lab.methods.base import StageContext
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
    atomic_write(run_dir / "config_resolved.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))

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
    ctx = StageContext(trainer=trainer, datamodule=datamodule, run_dir=run_dir, ckpt_path=cfg.get("ckpt_path"))
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
        return None
    return float(ctx.metrics[name])
