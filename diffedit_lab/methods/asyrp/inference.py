"""Asyrp's inference stages through Lightning's predict loop, on the test split of the image datamodule:

* ``edit``: invert each image (``invert.steps``), generate with the trained shift (``edit.steps``, strength
  ``edit.scale``) and, with ``edit.reconstruction``, without it; PNGs ``edit/{source,edited,reconstruction}/``,
  ``edit/grid.png``, the edit latency per image and the metrics of ``eval.metrics`` on those images (``edit/…``);
* ``eval``: the same edit of the first ``eval.max_images`` test images, metrics only (``eval/…``): directional
  CLIP (``prompt.source_text → prompt.text``) and identity between source and edit, LPIPS/PSNR/… of the edit
  against its source, FID/KID of the edits against the sources.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.callbacks.predictions import ImageWriter
from diffedit_lab.data.base import split_loader
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.timing import Stopwatch

log = logging.getLogger(__name__)


def images_loader(module, ctx: StageContext, limit: int | None, batch_size: int) -> DataLoader:
    return split_loader(ctx.datamodule, "test", limit, batch_size, "Asyrp edit/eval")


class EditStep:
    """One predict step: source → inversion → edit (→ reconstruction); images and/or metric inputs."""

    def __init__(self, module, write: bool) -> None:
        self.module, self.write = module, write

    @torch.no_grad()
    def __call__(self, batch: dict, batch_idx: int) -> dict:
        m, c = self.module, self.module.cfg
        with Stopwatch(m.device) as sw:
            out = m.edit_batch(batch)
        x0, edited, x_T = out["source"], out["edited"], out["latents"]
        indices = [int(i) for i in batch["index"]]
        latency = sw.ms / len(x0)
        metrics = {"edit": (x0, edited), "paired": (edited, x0), "fake": edited, "real": x0,
                   "scalars": {"latency_ms_per_image": torch.full((len(x0),), latency)}}  # fmt: skip
        if not self.write:
            return {"metrics": metrics}
        images = {"source": x0, "edited": edited}
        if c.edit.reconstruction:
            images["reconstruction"] = m.reconstruct(x_T)
        names = [Path(str(p)).stem for p in batch["path"]] if "path" in batch else [f"{i:05d}" for i in indices]
        return {"names": names, "images": images, "metrics": metrics}


def run_edit(module, ctx: StageContext) -> dict[str, float]:
    e = module.cfg.edit
    loader = images_loader(module, ctx, e.max_images, e.batch_size)
    writer = ImageWriter(ctx.run_dir / "edit", grid_keys=("source", "edited"), grid_columns=e.grid_columns,
                         grid_max=e.grid_max, log_key="edit/before_after")  # fmt: skip
    scorer = MetricsCallback(module.metric_suite(module.cfg.eval.metrics, module.cfg.eval, len(loader.dataset)), "edit")
    module.run_predict(ctx, loader, EditStep(module, write=True), callbacks=[writer, scorer])
    metrics = {**scorer.result, "edit/num_images": float(writer.count)}
    ctx.write_metrics(metrics)
    log.info("Asyrp edit: %s", {k: round(v, 5) for k, v in metrics.items()})
    return metrics


def run_eval(module, ctx: StageContext) -> dict[str, float]:
    e = module.cfg.eval
    loader = images_loader(module, ctx, e.max_images, e.batch_size)
    scorer = MetricsCallback(module.metric_suite(e.metrics, e, len(loader.dataset)), "eval")
    module.run_predict(ctx, loader, EditStep(module, write=False), callbacks=[scorer])
    metrics = {**scorer.result, "eval/num_images": float(len(loader.dataset))}
    ctx.write_metrics(metrics)
    log.info("Asyrp eval: %s", {k: round(v, 5) for k, v in metrics.items()})
    return metrics
