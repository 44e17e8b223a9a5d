"""FID / KID builders on torchmetrics, with offline-safe Inception weights and a tiny stand-in extractor.

Real runs use torch-fidelity's TF-ported Inception (the numbers papers report). Its weights file is resolved
before torchmetrics sees it, so offline runs fail fast with the file to provide instead of hanging on a
GitHub download. Tests and the demo pass ``feature=TinyFeatureExtractor()``: FID/KID are well defined for
any fixed feature map, only not comparable to published values.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.weights import load_weights, resolve_hub_file

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_DIMS = (64, 192, 768, 2048)
FeatureSpec = str | int | nn.Module


class TinyFeatureExtractor(nn.Module):
    """A fixed random conv net (seeded) mapping images to ``num_features`` features, for tests and demos.

    Accepts uint8 images in [0, 255] (what FID/KID are fed) or float images in [0, 1] (torchmetrics'
    ``normalize=True`` convention), of any size: inputs are resized to 32 px first.
    """

    def __init__(self, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.convs = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
            )
            self.head = nn.Linear(64, num_features)
        self.num_features = num_features
        self.feature_id = f"tiny{num_features}-seed{seed}"
        self.requires_grad_(False).eval()

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        h = self.convs(x * 2 - 1)
        # Spatial mean and std per channel: std makes the features sensitive to noise and texture.
        return self.head(torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], dim=1))


def build_inception(dims: int = 2048, weights_path: str | None = None) -> nn.Module:
    """torch-fidelity Inception-v3 (via torchmetrics) returning ``dims`` features of uint8 images."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    if dims not in INCEPTION_DIMS:
        raise UserError(f"FID/KID inception feature size must be one of {INCEPTION_DIMS}, got {dims}")
    path = resolve_hub_file("FID Inception", INCEPTION_FILE, INCEPTION_URL, weights_path, "fid.weights_path")
    # refuse pickles with code before torch-fidelity loads the file
    load_weights(path, "FID Inception weights", expected=f"torch-fidelity's Inception state dict ({INCEPTION_FILE})")
    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=[str(dims)], feature_extractor_weights_path=str(path)
    )
    net.num_features = dims
    net.feature_id = f"inception{dims}"
    return net


def build_feature_extractor(feature: FeatureSpec = "inception", weights_path: str | None = None) -> nn.Module:
    """``"inception"`` (2048-d), an Inception feature size (64/192/768/2048), or your own module."""
    if isinstance(feature, nn.Module):
        return feature
    if feature == "inception":
        return build_inception(2048, weights_path)
    if feature == "tiny":
        return TinyFeatureExtractor()
    if isinstance(feature, int) or (isinstance(feature, str) and feature.isdigit()):
        return build_inception(int(feature), weights_path)
    raise UserError(f"fid.feature must be 'inception', 'tiny', one of {INCEPTION_DIMS} or a module; got {feature!r}")


def feature_id(extractor: nn.Module) -> str:
    """A stable name for the feature space, used to key cached real statistics."""
    return getattr(extractor, "feature_id", type(extractor).__name__)


def build_fid(feature: FeatureSpec = "inception", weights_path: str | None = None) -> FrechetInceptionDistance:
    """FID fed uint8 images; real statistics survive ``reset()`` so one reference pass serves many evals."""
    extractor = build_feature_extractor(feature, weights_path)
    return FrechetInceptionDistance(feature=extractor, reset_real_features=False, input_img_size=(3, 32, 32))


def build_kid(
    feature: FeatureSpec = "inception",
    weights_path: str | None = None,
    subsets: int = 100,
    subset_size: int = 1000,
) -> KernelInceptionDistance:
    """KID fed uint8 images; ``subset_size`` is capped at the sample count when computing (see suite)."""
    extractor = build_feature_extractor(feature, weights_path)
    with warnings.catch_warnings():  # "KID keeps all features in memory": by design, said once in the docs
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        return KernelInceptionDistance(
            feature=extractor, subsets=subsets, subset_size=subset_size, reset_real_features=False
        )
