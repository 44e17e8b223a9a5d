"""SDD's inference stages through Lightning's predict loop: ``edit`` (one mapper + one generator pass per code,
plus real photos inverted by the projector) and ``eval`` (FID/KID, directional CLIP, identity, latent L2).

The steps return images and metric inputs; :class:`ImageWriter` and :class:`MetricsCallback` consume them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.callbacks.predictions import ImageWriter
from diffedit_lab.data.base import split_loader
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.timing import Stopwatch

log = logging.getLogger(__name__)


def test_loader(ctx: StageContext, limit: int | None, batch_size: int) -> DataLoader:
    """The test split, the first ``limit`` items, in order."""
    return split_loader(ctx.datamodule, "test", limit, batch_size, "SDD edit/eval (data.num_test)", key=None)


class EditSteps:
    """Predict steps of ``edit``; counts images to name them ``00000.png`` …"""

    def __init__(self, module) -> None:
        self.module = module
        self.index = 0

    @torch.no_grad()
    def codes(self, batch: dict, batch_idx: int) -> dict:
        m = self.module
        w = m.codes_from_batch(batch)
        before = m.synthesize(w)
        with Stopwatch(m.device) as sw:
            after = m.synthesize(m.mapper.edit(w))
        latency = sw.ms / 1000 / len(w)
        # codes inverted from photos carry the photo's name; sampled/given codes are numbered
        names = list(batch["name"]) if "name" in batch else [f"{self.index + i:05d}" for i in range(len(w))]
        self.index += len(w)
        return {
            "names": names,
            "images": {"original": before, "edited": after},
            "metrics": {"scalars": {"latency_ms_per_image": torch.full((len(w),), 1000 * latency)}},
        }

    def photos(self, batch: dict, batch_idx: int) -> dict:
        """Invert real photos with the optimisation projector, then edit their codes."""
        out = self.module.edit_batch(batch)
        return {
            "names": [Path(p).stem for p in batch["path"]],
            "name_format": "photos/{name}_{key}.png",
            "images": {k: out[k] for k in ("input", "inverted", "edited")},
            "grid": (out["inverted"], out["edited"]),
            "tensors": {"photos/codes": out["codes"]},
        }


def run_edit(module, ctx: StageContext) -> dict[str, float]:
    module.ensure_trained(ctx)
    e = module.cfg.edit
    out = ctx.run_dir / "edit"
    steps = EditSteps(module)
    writer = ImageWriter(out, grid_keys=("original", "edited"), grid_columns=e.grid_columns, grid_max=e.grid_max,
                         log_key="edit/before_after")  # fmt: skip
    timing = MetricsCallback(lambda: _empty_suite(), prefix="edit")
    loader = test_loader(ctx, e.max_images, _eval_batch_size(ctx))
    module.run_predict(ctx, loader, steps.codes, callbacks=[writer, timing])
    n_codes = writer.count
    if e.photos:
        dm = instantiate(e.photos)
        dm.setup("test")
        module.run_predict(ctx, dm.test_dataloader(), steps.photos, callbacks=[writer])
    metrics = {**timing.result, "edit/num_images": float(n_codes)}
    log.info("edited %d codes: %.2f ms/image (mapper + generator)", n_codes, metrics["edit/latency_ms_per_image"])
    ctx.write_metrics(metrics)
    return metrics


def _eval_batch_size(ctx: StageContext) -> int:
    dm = ctx.datamodule
    hp = getattr(dm, "hparams", {}) or {}
    return int(hp.get("eval_batch_size") or hp.get("batch_size") or 8)


def _empty_suite():
    from diffedit_lab.evaluation.suite import MetricSuite

    return MetricSuite([])


def run_eval(module, ctx: StageContext) -> dict[str, float]:

    e = module.cfg.eval
    if e.folder.pred:
        return module.evaluate_folder(ctx, e.folder)
    module.ensure_trained(ctx)
    module.to(ctx.device)
    loader = test_loader(ctx, e.max_images, e.batch_size)
    make_suite = module.metric_suite(e.metrics, e, len(loader.dataset))
    feed = (
        (lambda suite, device: _feed_reference(module, suite, Path(e.reference_dir), device))
        if e.reference_dir
        else None
    )
    scorer = MetricsCallback(make_suite, prefix="eval", feed_real=feed)

    @torch.no_grad()
    def step(batch: dict, batch_idx: int) -> dict:
        w = module.codes_from_batch(batch)
        before, after, w_edit = module.edit_codes(w)
        metrics = {"edit": (before, after), "fake": after, "scalars": {}}
        if e.reference_dir is None:
            metrics["real"] = before
        if "latent_l2" in e.metrics:
            metrics["scalars"]["latent_l2"] = ((w_edit - w) ** 2).mean(dim=(1, 2))
        return {"metrics": metrics}

    module.run_predict(ctx, loader, step, callbacks=[scorer])
    metrics = dict(scorer.result)
    metrics["eval/num_images"] = float(len(loader.dataset))
    log.info("eval: %s", {k: round(v, 5) for k, v in metrics.items()})
    ctx.write_metrics(metrics)
    return metrics


def _feed_reference(module, suite, ref_dir: Path, device: torch.device) -> None:
    from diffedit_lab.evaluation.folder_eval import list_images, load_image

    files = list_images(ref_dir, "eval.reference_dir")
    size = module.generator.output_size
    batch = []
    for f in files.values():
        img = load_image(f, size)
        if img is not None:
            batch.append(img)
        if len(batch) == 16:
            suite.update_unpaired_real(torch.stack(batch).to(device))
            batch = []
    if batch:
        suite.update_unpaired_real(torch.stack(batch).to(device))
