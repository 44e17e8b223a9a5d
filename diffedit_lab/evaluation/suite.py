"""A configurable bundle of evaluation metrics fed from four kinds of batches (paired/real/fake/edit).

Methods and the folder evaluator only say *what* they have (a prediction with its reference, a real or a
generated image, a source with its edit); the suite routes each batch to the metrics that use it. Metrics
whose weights are unavailable are skipped with one warning (``strict=False``), so a paper's full metric
list can stay in the config even on a machine that has only some of the weights.

Ranges: inputs are [-1, 1]. PSNR/SSIM/L1/L2 are computed on images mapped to [0, 1] (data range 1), PSNR
is the mean of per-image PSNRs; LPIPS takes [-1, 1]; FID/KID take uint8.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from diffedit_lab.evaluation.fid import FeatureSpec, build_feature_extractor, build_fid, build_kid
from diffedit_lab.evaluation.lpips import LPIPS
from diffedit_lab.evaluation.metrics import CLIPScore, DirectionalCLIPSimilarity, IdentitySimilarity
from diffedit_lab.evaluation.real_stats import RealStatsCache
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import to_uint8, to_unit  # [-1, 1] → [0, 1] float / uint8 as saved PNGs (FID/KID)

__all__ = ["ALL_METRICS", "EDIT", "PAIRED", "UNPAIRED", "MetricSuite", "to_uint8", "to_unit"]

log = logging.getLogger(__name__)

PAIRED = ("psnr", "ssim", "lpips", "l1", "l2")
UNPAIRED = ("fid", "kid")
EDIT = ("clip_dir", "clip_score", "identity")
ALL_METRICS = PAIRED + UNPAIRED + EDIT


def _maybe_call(obj):
    """Accept a ready module or a factory (e.g. a Hydra ``_partial_: true`` config) built only when used."""
    return obj() if callable(obj) and not isinstance(obj, nn.Module) else obj


class MetricSuite(nn.Module):
    """Metrics by name: psnr, ssim, lpips, l1, l2 (paired), fid, kid (unpaired), clip_dir, clip_score,
    identity (edit). Keep it outside a LightningModule's attributes (e.g. in a callback): its frozen
    networks would otherwise be saved in every checkpoint.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
        *,
        strict: bool = False,
        fid_feature: FeatureSpec = "inception",
        fid_weights_path: str | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        lpips_net: str = "alex",
        lpips_backbone_path: str | None = None,
        clip: nn.Module | Callable[[], nn.Module] | None = None,
        src_text: str | None = None,
        tgt_text: str | None = None,
        identity_encoder: nn.Module | Callable[[], nn.Module] | None = None,
        real_stats_dir: str | None = None,
        dataset_name: str | None = None,
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        unknown = [m for m in metrics if m not in ALL_METRICS]
        if unknown:
            raise UserError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
        self._opts = dict(
            fid_feature=fid_feature,
            fid_weights_path=fid_weights_path,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            lpips_net=lpips_net,
            lpips_backbone_path=lpips_backbone_path,
            clip=clip,
            src_text=src_text,
            tgt_text=tgt_text,
            identity_encoder=identity_encoder,
        )
        self._shared: dict[str, nn.Module] = {}
        self.metrics = nn.ModuleDict()
        self.skipped: dict[str, str] = {}
        for name in dict.fromkeys(metrics):
            try:
                self.metrics[name] = self._build(name)
            except UserError as exc:
                if strict:
                    raise
                self.skipped[name] = str(exc)
                log.warning("metric '%s' skipped: %s", name, exc)
        self._shared.clear()
        self._updated: set[str] = set()
        self._cache = RealStatsCache(real_stats_dir) if real_stats_dir else None
        self._cache_key = (dataset_name or "dataset", resolution or 0)
        if self._cache and (dataset_name is None or resolution is None):
            raise UserError("real_stats_dir needs dataset_name and resolution: they key the cached statistics")
        self.cached_real: set[str] = set()
        for name in UNPAIRED:
            if self._cache and name in self.metrics and self._cache.load_into(self.metrics[name], *self._cache_key):
                self.cached_real.add(name)

    # ------------------------------------------------------------------------------------- building
    def _build(self, name: str) -> Metric:
        o = self._opts
        if name == "psnr":
            return PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        if name == "ssim":
            return StructuralSimilarityIndexMeasure(data_range=1.0)
        if name == "l1":
            return MeanAbsoluteError()
        if name == "l2":
            return MeanSquaredError()
        if name == "lpips":
            return LPIPS(o["lpips_net"], o["lpips_backbone_path"])
        if name in UNPAIRED:
            feature = self._shared_module(
                "features", lambda: build_feature_extractor(o["fid_feature"], o["fid_weights_path"])
            )
            if name == "fid":
                return build_fid(feature)
            return build_kid(feature, subsets=o["kid_subsets"], subset_size=o["kid_subset_size"])
        if name == "identity":
            if o["identity_encoder"] is None:
                raise UserError("metric 'identity' needs identity_encoder (a face-embedding network config)")
            return IdentitySimilarity(self._shared_module("identity", lambda: _maybe_call(o["identity_encoder"])))
        if o["clip"] is None:
            raise UserError(f"metric '{name}' needs a CLIP model: set the suite's clip (e.g. clip=vit_b32)")
        clip = self._shared_module("clip", lambda: _maybe_call(o["clip"]))
        if not o["tgt_text"] or (name == "clip_dir" and not o["src_text"]):
            raise UserError(f"metric '{name}' needs tgt_text{' and src_text' if name == 'clip_dir' else ''}")
        if name == "clip_dir":
            return DirectionalCLIPSimilarity(clip, o["src_text"], o["tgt_text"])
        return CLIPScore(clip, o["tgt_text"])

    def _shared_module(self, key: str, make: Callable[[], nn.Module]) -> nn.Module:
        """Build each heavy network once (FID+KID share Inception, clip_dir+clip_score share CLIP)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    # -------------------------------------------------------------------------------------- feeding
    def _has(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n in self.metrics]

    @property
    def needs_real_images(self) -> bool:
        """False when every unpaired metric already has cached real statistics (skip the reference pass)."""
        return any(n not in self.cached_real for n in self._has(UNPAIRED))

    @property
    def needs_fake_images(self) -> bool:
        return bool(self._has(UNPAIRED))

    @property
    def needs_pairs(self) -> bool:
        return bool(self._has(PAIRED + EDIT))

    @torch.no_grad()
    def update_paired(self, pred: Tensor, ref: Tensor) -> None:
        """Faithfulness: prediction vs its own reference (reconstruction, translation)."""
        for name in self._has(PAIRED):
            a, b = (pred.float(), ref.float()) if name == "lpips" else (to_unit(pred), to_unit(ref))
            self.metrics[name].update(a, b)
            self._updated.add(name)

    @torch.no_grad()
    def update_unpaired_real(self, ref: Tensor) -> None:
        """Realism, reference side; ignored for metrics whose real statistics came from the cache."""
        for name in self._has(UNPAIRED):
            if name not in self.cached_real:
                self.metrics[name].update(to_uint8(ref), real=True)

    @torch.no_grad()
    def update_unpaired_fake(self, pred: Tensor) -> None:
        for name in self._has(UNPAIRED):
            self.metrics[name].update(to_uint8(pred), real=False)
            self._updated.add(name)

    @torch.no_grad()
    def update_edit(self, src: Tensor, edited: Tensor) -> None:
        """Text edits: direction (clip_dir), match to tgt_text (clip_score), identity kept (identity)."""
        for name in self._has(EDIT):
            metric = self.metrics[name]
            metric.update(edited) if name == "clip_score" else metric.update(src, edited)
            self._updated.add(name)

    # ------------------------------------------------------------------------------------ computing
    def compute(self) -> dict[str, float]:
        """Values of every metric that received data; KID gives ``kid`` (mean) and ``kid_std``."""
        out: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if name not in self._updated:
                continue
            if name in UNPAIRED and not self._enough_samples(name, metric):
                continue
            if name == "kid":
                mean, std = metric.compute()
                out["kid"], out["kid_std"] = float(mean), float(std)
            else:
                out[name] = float(metric.compute())
            if name in UNPAIRED and self._cache and name not in self.cached_real:
                self._cache.save_from(metric, *self._cache_key)
        return out

    def _enough_samples(self, name: str, metric: Metric) -> bool:
        if name == "fid":
            n_real, n_fake = int(metric.real_features_num_samples), int(metric.fake_features_num_samples)
        else:
            n_real = sum(len(f) for f in metric.real_features)
            n_fake = sum(len(f) for f in metric.fake_features)
            metric.subset_size = min(self._opts["kid_subset_size"], n_real, n_fake)
        if min(n_real, n_fake) < 2:
            log.warning("metric '%s' skipped: needs >= 2 real and fake images (got %d, %d)", name, n_real, n_fake)
            return False
        return True

    def reset(self) -> None:
        """Clear per-run states; FID/KID real statistics are kept (they describe the fixed reference set)."""
        for metric in self.metrics.values():
            metric.reset()
        self._updated.clear()
