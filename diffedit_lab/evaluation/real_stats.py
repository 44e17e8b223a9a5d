"""On-disk cache of FID/KID reference-set statistics, so a second evaluation skips the reference pass.

The reference pass (thousands of real images through Inception) dominates evaluation time and never
changes for a given dataset, resolution and feature space, which is exactly the cache key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffedit_lab.evaluation.fid import feature_id
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_torch_save
from diffedit_lab.utils.weights import load_weights

FID_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def _kind(metric: Metric) -> str:
    if isinstance(metric, FrechetInceptionDistance):
        return "fid"
    if isinstance(metric, KernelInceptionDistance):
        return "kid"
    raise UserError(f"real-stats cache supports FID and KID metrics, not {type(metric).__name__}")


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class RealStatsCache:
    """``<root>/<dataset>_<resolution>px_<feature id>_<fid|kid>.pt`` holding the metric's real-side states."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def path(self, metric: Metric, dataset: str, resolution: int | tuple[int, int]) -> Path:
        res = "x".join(map(str, resolution)) if isinstance(resolution, tuple | list) else str(resolution)
        key = f"{dataset}_{res}px_{feature_id(metric.inception)}_{_kind(metric)}"
        return self.root / (re.sub(r"[^A-Za-z0-9._-]+", "-", key) + ".pt")

    def load_into(self, metric: Metric, dataset: str, resolution: int | tuple[int, int]) -> bool:
        """Fill the metric's real states from disk; True if the reference pass can be skipped.

        Under DDP only rank 0 receives the states (the others stay empty), because syncing sums/concatenates
        them across ranks.
        """
        path = self.path(metric, dataset, resolution)
        if not path.is_file():
            return False
        if _rank() != 0:
            return True
        states = load_weights(path, "cached real-image statistics", expected=f"a cache file written by {__name__}")
        device = metric.device
        if _kind(metric) == "fid":
            for name in FID_STATES:
                setattr(metric, name, states[name].to(device))
        else:
            metric.real_features = [states["real_features"].to(device)]
        return True

    def save_from(self, metric: Metric, dataset: str, resolution: int | tuple[int, int]) -> Path | None:
        """Write the (DDP-synced) real states; only rank 0 writes. Returns the path written, if any."""
        path = self.path(metric, dataset, resolution)
        with metric.sync_context(should_unsync=True):
            if _kind(metric) == "fid":
                states = {name: getattr(metric, name).detach().cpu() for name in FID_STATES}
            else:
                feats = metric.real_features
                feats = torch.cat(feats) if isinstance(feats, list) else feats
                states = {"real_features": feats.detach().cpu()}
        if _rank() == 0:
            atomic_torch_save(states, path)
            return path
        return None
