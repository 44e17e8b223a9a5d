"""Metrics beside the method: a callback that feeds a :class:`MetricSuite` from what the steps return.

Predict (and validation) steps return ``{"metrics": {...}}`` with any of
  ``edit``: (source, edited) — directional CLIP, CLIP score, identity;
  ``paired``: (prediction, reference) — PSNR/SSIM/LPIPS/L1/L2;
  ``fake`` / ``real``: image batches — FID/KID;
  ``scalars``: {name: per-sample values} — averaged (e.g. latency, latent distance).
The suite lives in the callback, not the module (its networks stay out of checkpoints); its states sync under DDP.
During training the same callback scores validation steps and logs the values through the module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning import Callback
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from diffedit_lab.evaluation.suite import MetricSuite


def per_image_scores(pred: Tensor, ref: Tensor, scalars: dict[str, Tensor] | None = None) -> dict[str, list[float]]:
    """Each image's own L1 and PSNR against its reference (images in [-1, 1]), and per-image ``scalars``."""
    pred, ref = pred.detach().float().cpu(), ref.detach().float().cpu()
    if pred.shape != ref.shape:
        return {k: [float(x) for x in v.detach().float().cpu().reshape(-1)] for k, v in (scalars or {}).items()}
    err = (pred - ref).flatten(1)
    mse = err.pow(2).mean(1).clamp_min(1e-12)
    out = {"l1": err.abs().mean(1).tolist(), "psnr": (10 * torch.log10(4.0 / mse)).tolist()}  # data range 2
    out |= {k: [float(x) for x in v.detach().float().cpu().reshape(-1)] for k, v in (scalars or {}).items()}
    return out


class MetricsCallback(Callback):
    def __init__(
        self,
        make_suite: Callable[[], MetricSuite],
        prefix: str,
        feed_real: Callable | None = None,
        table_key: str | None = None,
    ) -> None:
        """``make_suite`` builds the suite on first use; ``feed_real(suite, device)`` may add reference images
        (e.g. a folder for FID) before the results are computed. ``table_key``: also send a table of each image's
        own scores (id, L1, PSNR, per-image scalars) to the loggers that show tables."""
        self.make_suite = make_suite
        self.prefix = prefix
        self.feed_real = feed_real
        self.table_key = table_key
        self.rows: list[dict] = []
        self.suite: MetricSuite | None = None
        self.scalars: dict[str, MeanMetric] = {}
        self.result: dict[str, float] = {}

    # --- shared -------------------------------------------------------------------------------------------
    def _start(self, pl_module) -> None:
        if self.suite is None:
            self.suite = self.make_suite()
        self.suite.reset()
        self.suite.to(pl_module.device)
        self.scalars = {}

    def _feed(self, pl_module, outputs) -> None:
        m = (outputs or {}).get("metrics") if isinstance(outputs, dict) else None
        if not m:
            return
        if "edit" in m:
            self.suite.update_edit(*m["edit"])
        if "paired" in m:
            self.suite.update_paired(*m["paired"])
        if "fake" in m:
            self.suite.update_unpaired_fake(m["fake"])
        if "real" in m:
            self.suite.update_unpaired_real(m["real"])
        for name, values in m.get("scalars", {}).items():
            if name not in self.scalars:
                self.scalars[name] = MeanMetric().to(pl_module.device)
            self.scalars[name].update(values.detach().float().to(pl_module.device))

    def _finish(self, pl_module) -> dict[str, float]:
        if self.feed_real is not None:
            self.feed_real(self.suite, pl_module.device)
        values = dict(self.suite.compute())
        values |= {name: float(metric.compute()) for name, metric in self.scalars.items()}
        self.result = {f"{self.prefix}/{k}": float(v) for k, v in values.items()}
        return self.result

    # --- predict (inference stages) -----------------------------------------------------------------------
    def on_predict_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._feed(pl_module, outputs)
        m = (outputs or {}).get("metrics") if isinstance(outputs, dict) else None
        if self.table_key and m and "paired" in m:
            scores = per_image_scores(*m["paired"], m.get("scalars"))
            n = len(m["paired"][0])
            names = outputs.get("names") or [f"{len(self.rows) + i:05d}" for i in range(n)]
            self.rows += [{"image": names[i], **{k: v[i] for k, v in scores.items()}} for i in range(n)]

    def on_predict_end(self, trainer, pl_module) -> None:
        self._finish(pl_module)
        if self.table_key and self.rows and trainer.is_global_zero:
            from diffedit_lab.utils.loggers import log_rows

            log_rows(trainer.loggers, self.table_key, self.rows)

    # --- validation (during training) ---------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._feed(pl_module, outputs)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log_dict(self._finish(pl_module), sync_dist=False)
