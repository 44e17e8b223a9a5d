"""The edit and eval passes, written once for every method: images in, the method's ``edit_batch`` timed per image,
PNGs and a before/after grid out, one metric suite, one metrics record.

:func:`edit_pass` is what a method's ``edit``/``eval`` stage runs (``EditingMethod.stage_edit``/``stage_eval``
call it with the method's ``edit``/``eval`` settings: ``max_images``, ``batch_size``, ``grid_columns``,
``grid_max``; ``metrics``). A method supplies only its ``edit_batch`` (the same function its pipeline calls) and,
where it differs, a hook: ``edit_generator()`` (one random stream over the split), ``edit_extras(batch, out)``
(images made outside the timed edit, e.g. Asyrp's reconstruction), or a whole ``step`` / ``loader`` /
``feed_real`` for passes that are not "the test split through ``edit_batch``" (SDD's codes, SDFT's translation).

A step returns ``{"names", "images", "grid", "metrics"}``: :class:`~diffedit_lab.callbacks.predictions.ImageWriter`
and :class:`~diffedit_lab.callbacks.metrics.MetricsCallback` consume it inside Lightning's predict loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.callbacks.predictions import ImageWriter
from diffedit_lab.data.base import split_loader
from diffedit_lab.utils.timing import Stopwatch

log = logging.getLogger(__name__)

RESULT_KEYS = ("edited", "translated")  # the name of the result in ``edit_batch``'s output (the input is first)


def source_and_result(out: dict[str, torch.Tensor]) -> tuple[str, str]:
    """The keys of what was edited (the first) and of the result (``edited``/``translated``) in ``out``."""
    result = next((k for k in RESULT_KEYS if k in out), None)
    if result is None:
        raise KeyError(f"edit_batch returned {sorted(out)}: one of {RESULT_KEYS} is the result")
    return next(iter(out)), result


def item_names(batch: dict[str, Any], n: int, start: int) -> list[str]:
    """File stems of the batch's items: their ``name``, the stem of their ``path``, their ``index`` (5 digits),
    else their position in the pass."""
    if "name" in batch:
        return [str(x) for x in batch["name"]]
    if "path" in batch:
        return [Path(str(p)).stem for p in batch["path"]]
    if "index" in batch:
        return [f"{int(i):05d}" for i in batch["index"]]
    return [f"{start + i:05d}" for i in range(n)]


def paired_metrics(source: torch.Tensor, result: torch.Tensor, latency_ms: float) -> dict[str, Any]:
    """What the metric suite gets from one batch of edits: directional/identity (``edit``), LPIPS/PSNR/… of the
    result against its source (``paired``), FID/KID of the results against the sources, the latency per image."""
    scalars = {"latency_ms_per_image": torch.full((len(source),), float(latency_ms))}
    return {"edit": (source, result), "paired": (result, source), "fake": result, "real": source, "scalars": scalars}


class EditStep:
    """One predict step of the shared pass: ``edit_batch`` (timed), the method's untimed extras, names."""

    def __init__(self, method: Any, write: bool) -> None:
        self.method, self.write = method, write
        self.generator = method.edit_generator()  # one stream over the whole split, or None
        self.count = 0

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        m = self.method
        with Stopwatch(m.device) as sw:
            out = m.edit_batch(batch, self.generator)
        src, res = source_and_result(out)
        n = len(out[src])
        result: dict[str, Any] = {"metrics": paired_metrics(out[src], out[res], sw.ms / n)}
        result["names"] = item_names(batch, n, self.count)
        if self.write:
            images = {src: out[src], res: out[res], **m.edit_extras(batch, out)}
            result.update(images=images, grid=(out[src], out[res]))
        self.count += n
        return result


def edit_pass(
    method: Any,
    ctx: Any,
    prefix: str,
    settings: Any,
    metrics: Sequence[str] = (),
    *,
    write: bool = True,
    text: bool = True,
    loader: DataLoader | None = None,
    step: Callable | None = None,
    feed_real: Callable | None = None,
    record: bool = True,
) -> dict[str, float]:
    """Run ``method`` over ``loader`` (default: the first ``settings.max_images`` test images) with ``step``
    (default :class:`EditStep`), writing PNGs and ``<run>/<prefix>/grid.png`` when ``write``, scoring ``metrics``
    (with the method's suite; latency always), and, when ``record``, ``<prefix>/…`` in the run's metrics."""
    if loader is None:
        what = f"method={getattr(method.cfg, 'name', type(method).__name__)} ({prefix})"
        loader = split_loader(ctx.datamodule, "test", settings.max_images, settings.batch_size, what)
    n = len(loader.dataset)
    eval_cfg = getattr(method.cfg, "eval", settings)
    table = None if write else f"{prefix}/per_image"  # writing passes table their files too (ImageWriter)
    scorer = MetricsCallback(method.metric_suite(metrics, eval_cfg, n, text=text), prefix, feed_real, table)
    callbacks: list = [scorer]
    if write:
        writer = ImageWriter(ctx.run_dir / prefix, grid_keys=("source", "edited"), grid_columns=settings.grid_columns,
                             grid_max=settings.grid_max, log_key=f"{prefix}/before_after")  # fmt: skip
        callbacks.insert(0, writer)
    method.run_predict(ctx, loader, step or EditStep(method, write), callbacks=callbacks)
    result = {**scorer.result, f"{prefix}/num_images": float(n)}
    log.info("%s %s: %s", type(method).__name__, prefix, {k: round(v, 5) for k, v in result.items()})
    if record:
        ctx.write_metrics(result)
    return result
