"""Evaluate a folder of predictions against a folder of references (paired by name) with a MetricSuite.

Pairs are files whose relative path matches once the extension is dropped (``a/001.png`` ↔ ``a/001.jpg``),
so outputs saved as PNG still pair with JPEG sources. Unpaired metrics (FID/KID) use every image on each
side. Unreadable images are skipped and counted rather than aborting a long evaluation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from diffedit_lab.data.images import IMAGE_EXTENSIONS, list_image_files, load_image
from diffedit_lab.evaluation.suite import MetricSuite
from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)

# ``load_image`` and ``IMAGE_EXTENSIONS`` are the dataset pipeline's (diffedit_lab.data.images), re-exported here.
__all__ = ["IMAGE_EXTENSIONS", "evaluate_folders", "list_images", "load_image"]


def list_images(root: str | os.PathLike, what: str) -> dict[str, Path]:
    """Images under ``root`` (as the datasets list them) keyed by relative path without extension; UserError
    if there is no such folder or no image in it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{what} folder not found: '{root}' (give a directory of images, e.g. PNG/JPEG)")
    files = list_image_files(root)
    if not files:
        raise UserError(f"{what} folder '{root}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    images: dict[str, Path] = {}
    for rel in files:
        path = root / rel
        key = Path(rel).with_suffix("").as_posix()
        if key in images:
            log.warning("%s: '%s' and '%s' share a name; using the first", what, images[key], path)
            continue
        images[key] = path
    return images


def _batches(paths: Sequence[Path], size: tuple[int, int], batch_size: int, stats: dict) -> Iterator[torch.Tensor]:
    for start in range(0, len(paths), batch_size):
        images = [load_image(p, size) for p in paths[start : start + batch_size]]
        stats["n_unreadable"] += sum(i is None for i in images)
        images = [i for i in images if i is not None]
        if images:
            yield torch.stack(images)


def _pair_batches(pairs, size, batch_size, stats) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(pairs), batch_size):
        loaded = [(load_image(p, size), load_image(r, size)) for p, r in pairs[start : start + batch_size]]
        good = [(p, r) for p, r in loaded if p is not None and r is not None]
        stats["n_unreadable"] += sum((p is None) + (r is None) for p, r in loaded)
        stats["n_paired"] += len(good)
        if good:
            yield torch.stack([p for p, _ in good]), torch.stack([r for _, r in good])


@torch.no_grad()
def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    suite: MetricSuite,
    resolution: int | Sequence[int] = 256,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, float | int]:
    """Metric values plus counts: n_pred, n_ref, n_paired (readable pairs), n_unreadable.

    For editing, ``ref_dir`` holds the sources: pairs feed both the paired and the edit metrics.
    """
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    preds, refs = list_images(pred_dir, "prediction"), list_images(ref_dir, "reference")
    suite = suite.to(device)
    stats = {"n_pred": len(preds), "n_ref": len(refs), "n_paired": 0, "n_unreadable": 0}
    paired_keys = sorted(preds.keys() & refs.keys())
    if suite.needs_pairs and not paired_keys:
        log.warning("no prediction/reference names match; paired and edit metrics are skipped")
    pairs = [(preds[k], refs[k]) for k in paired_keys]
    for pred, ref in _pair_batches(pairs, size, batch_size, stats):
        pred, ref = pred.to(device), ref.to(device)
        suite.update_paired(pred, ref)
        suite.update_edit(ref, pred)
        if suite.needs_fake_images:
            suite.update_unpaired_fake(pred)
        if suite.needs_real_images:
            suite.update_unpaired_real(ref)
    if suite.needs_fake_images:
        for pred in _batches([preds[k] for k in preds if k not in refs], size, batch_size, stats):
            suite.update_unpaired_fake(pred.to(device))
    if suite.needs_real_images:
        for ref in _batches([refs[k] for k in refs if k not in preds], size, batch_size, stats):
            suite.update_unpaired_real(ref.to(device))
    if stats["n_unreadable"] == stats["n_pred"] + stats["n_ref"]:
        raise UserError(f"no readable images in '{pred_dir}' or '{ref_dir}'")
    return {**suite.compute(), **stats}
