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

from lightning import Callback
from torchmetrics.aggregation import MeanMetric

from diffedit_lab.evaluation.suite import MetricSuite


class MetricsCallback(Callback):
    def __init__(self, make_suite: Callable[[], MetricSuite], prefix: str, feed_real: Callable | None = None) -> None:
        """``make_suite`` builds the suite on first use; ``feed_real(suite, device)`` may add reference images
        (e.g. a folder for FID) before the results are computed."""
        self.make_suite = make_suite
        self.prefix = prefix
        self.feed_real = feed_real
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

    def on_predict_end(self, trainer, pl_module) -> None:
        self._finish(pl_module)

    # --- validation (during training) ---------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._feed(pl_module, outputs)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log_dict(self._finish(pl_module), sync_dist=False)
