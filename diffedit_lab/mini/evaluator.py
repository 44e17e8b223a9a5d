"""The measuring instrument of ``make mini``: a small digit classifier trained here on the real train split.

MNIST-scale generative papers score samples with a classifier trained on the data: its accuracy on a sample says
which class the sample looks like, and its penultimate features stand in for Inception's in FID/KID. This one is a
LeNet-style CNN on the 32 px digits (3 repeated grey channels, [-1, 1]), trained in well under two minutes on two
CPU cores; the trained weights are one artifact (``evaluator.safetensors``) reused by every later ``make mini``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffedit_lab.utils.artifacts import load_artifact, read_artifact_config, save_artifact

log = logging.getLogger(__name__)


class DigitClassifier(nn.Module):
    """Three conv blocks (32→16→8→4 px) → ``feature_dim`` features (ReLU) → ``num_classes`` logits."""

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        w = int(width)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.convs = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 2 * w))
        self.embed = nn.Linear(2 * w * 16, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)
        self.config = {"num_classes": num_classes, "width": w, "feature_dim": feature_dim}

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, 32, 32) in [-1, 1] → (B, feature_dim): the features FID/KID and diversity are measured in."""
        if x.shape[-1] != 32 or x.shape[-2] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return F.relu(self.embed(self.convs(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def random_shift(x: Tensor, gen: torch.Generator, pixels: int = 2) -> Tensor:
    """Each image moved by up to ``pixels`` in x and y (background-padded): generated digits are not centred
    exactly like the data, and a classifier that only knows centred digits would call them wrong for it."""
    pad = F.pad(x, (pixels,) * 4, value=-1.0)
    out = torch.empty_like(x)
    size = x.shape[-1]
    offsets = torch.randint(0, 2 * pixels + 1, (x.shape[0], 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = pad[i, :, dy : dy + size, dx : dx + size]
    return out


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` on (N, 3, H, W) images in [-1, 1]."""
    model.eval()
    hits = sum(
        int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    return hits / max(1, len(images))


def train_classifier(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], steps: int, seed: int, batch: int = 64, lr: float = 1e-3
) -> tuple[DigitClassifier, dict]:
    """Adam on cross-entropy with random shifts, ``steps`` steps of ``batch`` from ``train`` (seeded); returns the
    model and its record (held-out ``test`` accuracy, seconds)."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = DigitClassifier(num_classes=int(train[1].max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = train
    start = time.perf_counter()
    model.train()
    for _ in range(int(steps)):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = F.cross_entropy(model(random_shift(x[idx], gen)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    record = {
        "steps": int(steps),
        "seed": int(seed),
        "batch": batch,
        "lr": lr,
        "test_accuracy": accuracy(model, *test),
        "train_seconds": round(seconds, 2),
        **model.config,
    }
    return model.eval().requires_grad_(False), record


def load_or_train(path: Path, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], steps: int, seed: int):
    """The evaluator at ``path`` when it was trained with these ``steps`` and ``seed``, else a new one (saved there
    atomically). Returns the model and its record."""
    path = Path(path)
    config = read_artifact_config(path) if path.is_file() else None
    if config and config.get("steps") == int(steps) and config.get("seed") == int(seed):
        model = DigitClassifier(config["num_classes"], config["width"], config["feature_dim"])
        model.load_state_dict(load_artifact(path, "mini evaluator").state)
        log.info("evaluator: reusing %s (test accuracy %.4f)", path, config["test_accuracy"])
        return model.eval().requires_grad_(False), {**config, "cached": True}
    model, record = train_classifier(train, test, steps, seed)
    save_artifact(path, model.state_dict(), record)
    log.info(
        "evaluator: trained in %.1f s, test accuracy %.4f → %s", record["train_seconds"], record["test_accuracy"], path
    )
    return model, {**record, "cached": False}
