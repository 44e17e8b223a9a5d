"""What every method shares: named stages, lazily built frozen components, run-dir outputs, metrics.json.

A method is a LightningModule with a ``STAGES`` tuple (e.g. ``("select", "fit", "edit", "eval")``) and a
``stage_<name>(ctx)`` method for each; ``run`` dispatches to them. ``fit`` goes through ``trainer.fit``; the
other stages are plain inference loops on the trainer's root device.

Frozen pretrained networks (diffusion teachers, generators, CLIP, ArcFace) are built from their Hydra configs on
first use and kept OUT of the module's registered children — so checkpoints hold only what is trained, and an
``edit`` run never loads the teacher it does not need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import atomic_json_dump

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage may use: the trainer (fit, loggers, device), the datamodule and the run directory."""

    trainer: Trainer
    datamodule: Any
    run_dir: Path
    ckpt_path: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.trainer.strategy.root_device


class EditingMethod(LightningModule):
    STAGES: tuple[str, ...] = ()
    DEFAULT_STAGES: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_frozen", {})  # name -> built frozen component (not a registered child)

    # --- frozen components ----------------------------------------------------------------------------------
    def component(self, name: str, cfg: DictConfig | dict | None, **pop_keys: Any) -> Any:
        """Instantiate ``cfg`` once, freeze it, move it to this module's device, and cache it by ``name``."""
        if name not in self._frozen:
            if cfg is None:
                self._frozen[name] = None
            else:
                cfg = (
                    OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
                    if not isinstance(cfg, DictConfig)
                    else cfg.copy()
                )
                for key in pop_keys:
                    cfg.pop(key, None)
                if cfg.get("dtype") == "auto":  # half precision only where the method actually runs on a GPU
                    cfg.dtype = "fp16" if self.device.type == "cuda" else "fp32"
                obj = instantiate(cfg)
                if isinstance(obj, torch.nn.Module):
                    obj.eval().requires_grad_(False)
                self._frozen[name] = obj
        obj = self._frozen[name]
        if isinstance(obj, torch.nn.Module) and getattr(obj, "_diffedit_device", None) != self.device:
            obj.to(self.device)  # only when the method moved: .to() walks every parameter of a large teacher
            object.__setattr__(obj, "_diffedit_device", self.device)
        return obj

    def __getstate__(self) -> dict:  # ddp_spawn pickles the module: rebuild frozen parts in the workers
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_frozen"] = {}
        return state

    # --- stages -----------------------------------------------------------------------------------------------
    def resolve_stages(self, stage: str | list[str] | None) -> list[str]:
        if stage is None:
            return list(self.DEFAULT_STAGES)
        stages = [stage] if isinstance(stage, str) else list(stage)
        for s in stages:
            if s not in self.STAGES:
                raise UserError(
                    f"method '{type(self).__name__}' has no stage '{s}'; its stages are {list(self.STAGES)}"
                )
        return stages

    def run_stage(self, stage: str, ctx: StageContext) -> dict[str, float]:
        log.info("stage %s", stage)
        return getattr(self, f"stage_{stage}")(ctx) or {}

    def evaluate_folder(
        self,
        ctx: StageContext,
        folder_cfg,
        clip=None,
        identity=None,
        src_text: str | None = None,
        tgt_text: str | None = None,
    ) -> dict[str, float]:
        """``stage=eval`` on any outputs: score ``folder.pred`` against ``folder.ref`` (paired when names match).

        Works for images made by any tool, so results of other methods can be scored with the same metrics.
        """
        from diffedit_lab.evaluation.folder_eval import evaluate_folders
        from diffedit_lab.evaluation.suite import MetricSuite

        if not folder_cfg.get("ref"):
            raise UserError("eval.folder.pred is set but eval.folder.ref is not: give the reference/source folder")
        suite = MetricSuite(
            list(folder_cfg.metrics),
            fid_feature=folder_cfg.get("fid_feature", "inception"),
            fid_weights_path=folder_cfg.get("fid_weights_path"),
            lpips_backbone_path=folder_cfg.get("lpips_backbone_path"),
            clip=clip,
            src_text=src_text,
            tgt_text=tgt_text,
            identity_encoder=identity,
        )
        result = evaluate_folders(
            folder_cfg.pred,
            folder_cfg.ref,
            suite,
            resolution=folder_cfg.resolution,
            batch_size=int(folder_cfg.get("batch_size", 16)),
            device=ctx.device,
        )
        metrics = {f"eval/{k}": float(v) for k, v in result.items()}
        self.write_metrics(ctx, metrics)
        return metrics

    # --- outputs ----------------------------------------------------------------------------------------------
    @staticmethod
    def write_metrics(ctx: StageContext, metrics: dict[str, float], step: int | None = None) -> None:
        """Merge into ``metrics.json`` (and ``metrics.csv``) of the run dir and send to every logger."""
        ctx.metrics.update(metrics)
        atomic_json_dump(ctx.metrics, ctx.run_dir / "metrics.json")
        with open(ctx.run_dir / "metrics.csv", "w") as f:
            f.write("metric,value\n")
            for k, v in sorted(ctx.metrics.items()):
                f.write(f"{k},{v}\n")
        for logger in ctx.trainer.loggers:
            logger.log_metrics(metrics, step=step if step is not None else ctx.trainer.global_step)
            logger.save()
