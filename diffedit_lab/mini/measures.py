"""What ``make mini`` measures on the images the project's stages wrote, in the evaluator's feature space.

* ``class_rate``: the fraction of images the evaluator assigns to a class (target accuracy of samples/translations);
* ``fid_kid``: FID and KID (torchmetrics, through the project's builders) with the evaluator's penultimate features
  instead of Inception's, as MNIST-scale papers do;
* ``diversity``: the mean pairwise L2 distance between images' evaluator features (mode collapse → small);
* ``paired``: SSIM, MSE and PSNR of each image against its source, in [0, 1] pixels (the project's convention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from diffedit_lab.evaluation.fid import build_fid, build_kid


class EvaluatorFeatures(nn.Module):
    """The evaluator's features of images fed as FID/KID feed them (uint8 in [0, 255] or floats in [0, 1])."""

    def __init__(self, evaluator: nn.Module) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.feature_id = "mini-evaluator"

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return self.evaluator.features(x * 2 - 1)


def read_images(folder: str | Path, names: list[str] | None = None) -> tuple[Tensor, list[str]]:
    """The PNGs of ``folder`` (sorted, or ``names``) as (N, 3, H, W) in [-1, 1], and their names."""
    folder = Path(folder)
    names = names if names is not None else sorted(p.name for p in folder.glob("*.png") if p.name != "grid.png")
    arrays = [np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float32) / 127.5 - 1 for n in names]
    if not arrays:
        raise FileNotFoundError(f"no images in {folder}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), names


def _uint8(x: Tensor) -> Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def class_rate(evaluator: nn.Module, images: Tensor, label: int) -> float:
    """Fraction of ``images`` the evaluator classifies as ``label``."""
    return float((evaluator(images).argmax(1) == int(label)).float().mean())


@torch.no_grad()
def fid_kid(evaluator: nn.Module, fake: Tensor, real: Tensor) -> tuple[float, float]:
    """FID and KID (mean over subsets) of ``fake`` vs ``real`` in the evaluator's features."""
    features = EvaluatorFeatures(evaluator)
    fid = build_fid(features)
    kid = build_kid(features, subsets=50, subset_size=min(len(fake), len(real), 50))
    for metric in (fid, kid):
        metric.update(_uint8(real), real=True)
        metric.update(_uint8(fake), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG: the same every time
        torch.manual_seed(0)
        return float(fid.compute()), float(kid.compute()[0])


@torch.no_grad()
def diversity(evaluator: nn.Module, images: Tensor) -> float:
    """Mean pairwise L2 distance of the images' evaluator features (over all pairs i < j)."""
    f = evaluator.features(images)
    d = torch.cdist(f, f)
    n = len(f)
    return float(d.sum() / (n * (n - 1))) if n > 1 else 0.0


@torch.no_grad()
def paired(pred: Tensor, ref: Tensor) -> dict[str, float]:
    """SSIM, MSE and PSNR (per-image mean) of ``pred`` vs ``ref``, both in [-1, 1], measured in [0, 1] pixels."""
    p, r = (pred.clamp(-1, 1) + 1) / 2, (ref.clamp(-1, 1) + 1) / 2
    return {
        "ssim": float(structural_similarity_index_measure(p, r, data_range=1.0)),
        "mse": float((p - r).square().mean()),
        "psnr": float(peak_signal_noise_ratio(p, r, data_range=1.0, dim=(1, 2, 3))),
    }
