"""Face-identity encoder: ArcFace IR-SE50, the identity loss of pSp, e4e, StyleCLIP and DiffusionCLIP.

Those projects all ship one checkpoint, ``model_ir_se50.pth`` (TreB1eN's InsightFace IR-SE50, 112x112 input,
512-d embedding). The modules below are named and ordered so that its state_dict loads *strictly*:
``input_layer.{0,1,2}``, ``body.{0..23}.{shortcut_layer,res_layer}`` (the squeeze-excitation module is
``res_layer.5.fc1/fc2``) and ``output_layer.{0,3,4}``. The backbone's depth and widths are an
:class:`IRSEConfig`; the tiny one of tests and the demo (:mod:`diffedit_lab.testing.identity`) exercises the real
loading path without the 175 MB file.

The encoder reproduces the pSp/StyleCLIP preprocessing exactly: images are brought to 256x256, the face region
``[35:223, 32:220]`` is cropped and average-pooled to 112x112. The embeddings of two images of the same person
then have a high cosine similarity; ``1 - cos`` is the identity loss.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import load_weights
from diffedit_lab.utils.rng import seeded

log = logging.getLogger(__name__)

FACE_CROP_SIZE = 256  # images are brought to this size before cropping (pSp / StyleCLIP convention)
FACE_CROP = (slice(35, 223), slice(32, 220))  # rows, columns of the face region at 256x256
ARCFACE_INPUT = 112


@dataclass(frozen=True)
class IRSEConfig:
    """Depth and width of an IR-SE backbone: ``units[i]`` bottlenecks of width ``widths[i]`` per stage."""

    units: tuple[int, ...] = (3, 4, 14, 3)  # IR-SE50
    widths: tuple[int, ...] = (64, 128, 256, 512)
    embedding_dim: int = 512
    se_reduction: int = 16


IRSE50 = IRSEConfig()


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (keys ``fc1``/``fc2`` are 1x1 convs, no bias)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """Pre-activation residual unit ("improved residual") with squeeze-excitation; stride on the 2nd conv."""

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int) -> None:
        super().__init__()
        if in_channels == depth:
            # A 1x1 max-pool is just strided subsampling; kept as a module for the checkpoint's key layout.
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSEBackbone(nn.Module):
    """ArcFace IR-SE backbone for 112x112 faces -> L2-normalised embeddings."""

    def __init__(self, config: IRSEConfig = IRSE50) -> None:
        super().__init__()
        w0 = config.widths[0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.PReLU(w0))
        units: list[nn.Module] = []
        in_ch = w0
        for n, width in zip(config.units, config.widths):
            for i in range(n):  # the first unit of each stage halves the resolution
                units.append(BottleneckIRSE(in_ch, width, 2 if i == 0 else 1, config.se_reduction))
                in_ch = width
        self.body = nn.Sequential(*units)
        side = ARCFACE_INPUT // 2 ** len(config.units)  # 7 for four stages
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Dropout(0.6),
            nn.Flatten(),
            nn.Linear(in_ch * side * side, config.embedding_dim),
            nn.BatchNorm1d(config.embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def face_crop(images: torch.Tensor) -> torch.Tensor:
    """pSp/StyleCLIP preprocessing: any size -> 256x256 -> face crop -> 112x112 (average pooling).

    Downscaling uses adaptive average pooling, as StyleCLIP does for 1024 px StyleGAN images; smaller inputs
    are upsampled bilinearly. Non-square images are stretched to a square (face datasets are square).
    """
    h, w = images.shape[-2:]
    if (h, w) != (FACE_CROP_SIZE, FACE_CROP_SIZE):
        if h >= FACE_CROP_SIZE and w >= FACE_CROP_SIZE:
            images = F.adaptive_avg_pool2d(images, FACE_CROP_SIZE)
        else:
            images = F.interpolate(images, size=(FACE_CROP_SIZE, FACE_CROP_SIZE), mode="bilinear")
    rows, cols = FACE_CROP
    return F.adaptive_avg_pool2d(images[:, :, rows, cols], ARCFACE_INPUT)


class IdentityEncoder(nn.Module):
    """Frozen ArcFace embedder for [-1, 1] face images of any size.

    Always in eval mode (``train()`` is a no-op): in train mode its BatchNorms would use batch statistics and
    overwrite the pretrained running statistics whenever a LightningModule that owns it starts training.
    Gradients still flow to the *input*, which is what an identity loss needs. ``config`` is the backbone's
    architecture (IR-SE50 by default); ``weights_path`` a state_dict in the ``model_ir_se50.pth`` layout.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, config: IRSEConfig = IRSE50) -> None:
        super().__init__()
        self.backbone = IRSEBackbone(config)
        if weights_path is not None:
            self.backbone.load_state_dict(_read_checkpoint(weights_path, self.backbone))
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> IdentityEncoder:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1, 1] -> (B, D) unit-norm embeddings."""
        return self.backbone(face_crop(images.float()))

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample cosine similarity of the identities in ``a`` and ``b``: (B,)."""
        return (self(a) * self(b)).sum(dim=1)

    def loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Identity loss ``mean(1 - cos)``; 0 when both batches show the same faces."""
        return (1 - self.similarity(a, b)).mean()


def _read_checkpoint(weights_path: str | os.PathLike, model: nn.Module) -> dict[str, torch.Tensor]:
    """Load and sanity-check an IR-SE50 state_dict, with one-line errors naming what to provide."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise UserError(
            f"identity encoder weights not found at '{path}': download model_ir_se50.pth (the ArcFace "
            "IR-SE50 weights used by pSp/StyleCLIP) and set identity.weights_path to its local path"
        )
    state = load_weights(path, "ArcFace IR-SE50 identity weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(
            f"'{path}' holds a {type(state).__name__}, not an ArcFace IR-SE50 state dict (model_ir_se50.pth)"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    # Checkpoints saved before torch 0.4.1 have no BatchNorm counters; they are unused in eval mode.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise UserError(
            f"'{path}' is not an ArcFace IR-SE50 checkpoint in the model_ir_se50.pth layout "
            f"({len(missing)} missing keys e.g. {missing[:2]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:2]}, "
            f"{len(wrong)} with wrong shapes e.g. {wrong[:2]}); provide model_ir_se50.pth (pSp/StyleCLIP)"
        )
    return state


def build_identity(
    weights_path: str | os.PathLike | None = None,
    enabled: bool = True,
    device: torch.device | str | None = None,
    random_weights: bool = False,
) -> IdentityEncoder | None:
    """Hydra factory for the ArcFace IR-SE50 identity encoder, or ``None`` to switch identity losses/metrics off.

    Returns ``None`` when ``enabled`` is false, or when no weights are given: a randomly initialised ArcFace
    would make the identity loss meaningless noise, so methods must treat ``None`` as "no identity term".
    ``random_weights=True`` (the explicit real-shape switch, :mod:`diffedit_lab.models.real_shapes`) is the one
    exception: IR-SE50 with seeded random weights, one WARNING line, ``weights_path`` never read.
    The random tiny encoder of tests and the demo is :func:`diffedit_lab.testing.identity.tiny_identity`.
    """
    from diffedit_lab.models import real_shapes

    random = real_shapes.check_flag(random_weights, "identity.random_weights")
    if not enabled:
        return None
    if random:
        real_shapes.announce("ArcFace IR-SE50 (model_ir_se50.pth)")
        with seeded(real_shapes.RANDOM_WEIGHTS_SEED, device):
            return IdentityEncoder(None, IRSE50)
    if weights_path is None:
        log.warning("identity loss/metric disabled: set identity.weights_path to model_ir_se50.pth to enable it")
        return None
    encoder = IdentityEncoder(weights_path)
    return encoder if device is None else encoder.to(device)
