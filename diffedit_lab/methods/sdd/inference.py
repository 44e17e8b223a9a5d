"""SDD's edit and eval passes (the shared :func:`~diffedit_lab.methods.editing.edit_pass`, with SDD's own steps):
``edit`` (one mapper + one generator pass per code — the latency SDD is about, the source image rendered
untimed — plus real photos inverted by the projector) and ``eval`` (FID/KID, directional CLIP, identity, latent
L2; FID against ``eval.reference_dir`` when given)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from diffedit_lab.data.base import eval_batch_size, split_loader
from diffedit_lab.methods.editing import edit_pass, item_names, paired_metrics
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.timing import Stopwatch

log = logging.getLogger(__name__)


def test_loader(ctx: StageContext, limit: int | None, batch_size: int) -> DataLoader:
    """The test split, the first ``limit`` items, in order."""
    return split_loader(ctx.datamodule, "test", limit, batch_size, "SDD edit/eval (data.num_test)", key=None)


class EditSteps:
    """Predict steps of ``edit``; counts codes to name them ``00000.png`` …"""

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
        # codes inverted from photos carry the photo's name; sampled/given codes are numbered
        names = list(batch["name"]) if "name" in batch else item_names({}, len(w), self.index)
        self.index += len(w)
        latency = {"latency_ms_per_image": torch.full((len(w),), sw.ms / len(w))}
        return {"names": names, "images": {"original": before, "edited": after}, "grid": (before, after),
                "metrics": {"scalars": latency}}  # fmt: skip

    def photos(self, batch: dict, batch_idx: int) -> dict:
        """Invert real photos with the optimisation projector, then edit their codes."""
        out = self.module.edit_batch(batch)
        return {
            "names": [Path(p).stem for p in batch["path"]],
            "name_format": "{name}_{key}.png",  # edit/photos/<photo>_<key>.png
            "images": {k: out[k] for k in ("input", "inverted", "edited")},
            "grid": (out["inverted"], out["edited"]),
            "tensors": {"photos/codes": out["codes"]},
        }


def run_edit(module, ctx: StageContext) -> dict[str, float]:
    e = module.cfg.edit
    steps = EditSteps(module)
    loader = test_loader(ctx, e.max_images, eval_batch_size(ctx.datamodule))
    metrics = edit_pass(module, ctx, "edit", e, loader=loader, step=steps.codes)
    if e.photos:
        dm = instantiate(e.photos)
        dm.setup("test")
        edit_pass(module, ctx, "edit/photos", e, loader=dm.test_dataloader(), step=steps.photos, record=False)
    return metrics


def run_eval(module, ctx: StageContext) -> dict[str, float]:
    e = module.cfg.eval
    module.to(ctx.device)
    ref = Path(e.reference_dir) if e.reference_dir else None
    feed = (lambda suite, device: _feed_reference(module, suite, ref, device)) if ref else None

    @torch.no_grad()
    def step(batch: dict, batch_idx: int) -> dict:
        w = module.codes_from_batch(batch)
        with Stopwatch(module.device) as sw:
            before, after, w_edit = module.edit_codes(w)
        metrics = paired_metrics(before, after, sw.ms / len(w))
        if ref is not None:
            del metrics["real"]  # FID/KID against the reference photos instead of the unedited images
        if "latent_l2" in e.metrics:
            metrics["scalars"]["latent_l2"] = ((w_edit - w) ** 2).mean(dim=(1, 2))
        return {"metrics": metrics}

    loader = test_loader(ctx, e.max_images, e.batch_size)
    return edit_pass(module, ctx, "eval", e, e.metrics, write=False, loader=loader, step=step, feed_real=feed)


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
