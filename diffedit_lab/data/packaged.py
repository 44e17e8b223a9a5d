"""Small real image sets that ship inside Python packages, so models can learn from real images offline.

* ``digits``: scikit-learn's handwritten digits (1,797 images, 8×8 grey, classes 0–9; ``pip install scikit-learn``);
* ``lfw_faces``: scikit-image's LFW subset (200 crops, 25×25 grey: 100 faces = class 1, 100 non-faces = class 0).

Images are resized (bilinear, antialiased) to ``resolution`` px, mapped to [-1, 1] and repeated to 3 channels, so
every RGB prior, metric and method takes them as is. The train/val/test split is stratified per class and fixed
by ``split_seed`` (not the run's seed): every run, seed and method sees the same held-out images. ``classes`` keeps
some classes only (a source domain of digits 0–8, a target domain of 9s); ``train_per_class`` keeps the first N
train images of each class (few-shot sets). Items carry ``label`` (the class) beside ``image``/``path``/``index``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from diffedit_lab.data.datamodule import SPLITS, ImageDataModule
from diffedit_lab.data.images import split_draw
from diffedit_lab.utils.errors import UserError


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "data=digits needs scikit-learn: pip install 'diffedit_lab[mini]' (`make install` installs it)"
        ) from None
    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def _lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    import skimage.data

    try:
        images = skimage.data.lfw_subset()
    except Exception as exc:  # a scikit-image without the bundled file would try to download it
        raise UserError(f"scikit-image cannot provide lfw_subset offline: {exc}") from None
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)  # scikit-image documents: 100 faces, then 100 others
    return images.astype(np.float32), labels


# name -> (loader of (N, h, w) grey images in [0, 1] and their labels, class names)
PACKAGED_SETS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], tuple[str, ...]]] = {
    "digits": (_digits, tuple(str(i) for i in range(10))),
    "lfw_faces": (_lfw_faces, ("non_face", "face")),
}


@functools.cache
def load_packaged(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, h, w) float32 in [0, 1], labels (N,) int64) of a packaged set, read once per process."""
    if name not in PACKAGED_SETS:
        raise UserError(f"data.name={name!r}: unknown packaged image set; choose from {sorted(PACKAGED_SETS)}")
    return PACKAGED_SETS[name][0]()


def to_model_images(grey: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) in [0, 1] → (N, 3, H, W) in [-1, 1] (bilinear, antialiased when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(grey))[:, None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 2 - 1).repeat(1, 3, 1, 1).contiguous()


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Indices per split: each class's images permuted by ``seed`` and cut by the fractions (rounded down, at least
    one test image per class when ``test_fraction`` > 0); every split sorted."""
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        order = idx[torch.randperm(len(idx), generator=gen).numpy()]
        n_test = max(1, int(len(idx) * test_fraction)) if test_fraction > 0 else 0
        n_val = int(len(idx) * val_fraction)
        out["test"] += order[:n_test].tolist()
        out["val"] += order[n_test : n_test + n_val].tolist()
        out["train"] += order[n_test + n_val :].tolist()
    return {s: sorted(v) for s, v in out.items()}


class TensorImageDataset(Dataset):
    """Items ``{"image", "label", "path", "index"}`` from images held in memory (keys as :func:`split_draw`)."""

    def __init__(self, images: torch.Tensor, labels: Sequence[int], names: Sequence[str], hflip: bool = False):
        self.images, self.labels, self.names, self.hflip = images, list(labels), list(names), hflip

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict:
        index, flip = split_draw(key, self.hflip)
        image = self.images[index]
        return {
            "image": image.flip(-1) if flip else image,
            "label": self.labels[index],
            "path": self.names[index],
            "index": index,
        }


class PackagedDataModule(ImageDataModule):
    """A packaged real image set (``name``: digits | lfw_faces) with fixed stratified splits and class labels."""

    def __init__(
        self,
        name: str = "digits",
        resolution: int | Sequence[int] = 32,
        classes: Sequence[int] | None = None,
        train_per_class: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.3,
        split_seed: int = 0,
        max_images: int | None = None,
        hflip: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ):
        super().__init__(
            root=None,
            resolution=resolution,
            hflip=hflip,
            split_mode="ratio",
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            max_images=max_images,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            layout_hint=f"the {name} images ship inside a Python package, no files needed",
        )
        if name not in PACKAGED_SETS:
            raise UserError(f"data.name={name!r}: unknown packaged image set; choose from {sorted(PACKAGED_SETS)}")
        self.name = name
        self.class_names = PACKAGED_SETS[name][1]
        known = range(len(self.class_names))
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        if self.classes is not None and (not self.classes or any(c not in known for c in self.classes)):
            raise UserError(f"data.classes={list(classes)}: choose a non-empty subset of {list(known)} ({name})")
        if train_per_class is not None and int(train_per_class) < 1:
            raise UserError(f"data.train_per_class must be a positive int or null, got {train_per_class!r}")
        self.train_per_class = None if train_per_class is None else int(train_per_class)
        self.split_seed = int(split_seed)

    def preflight(self) -> None:
        load_packaged(self.name)  # a missing package is one line at start-up, before anything is built

    def _build_datasets(self) -> dict[str, Dataset]:
        grey, labels = load_packaged(self.name)
        splits = stratified_split(labels, self.val_fraction, self.test_fraction, self.split_seed)
        datasets: dict[str, Dataset] = {}
        for split in SPLITS:
            idx = [i for i in splits[split] if self.classes is None or int(labels[i]) in self.classes]
            if split == "train" and self.train_per_class is not None:
                taken: dict[int, int] = {}
                keep = []
                for i in idx:
                    c = int(labels[i])
                    if taken.get(c, 0) < self.train_per_class:
                        keep.append(i)
                        taken[c] = taken.get(c, 0) + 1
                idx = keep
            idx = idx[: self.max_images]
            images = to_model_images(grey[idx], self.size) if idx else torch.zeros(0, 3, *self.size)
            names = [f"{self.name}/{i:05d}_c{int(labels[i])}.png" for i in idx]
            flip = self.hflip and split == "train"
            datasets[split] = TensorImageDataset(images, [int(labels[i]) for i in idx], names, flip)
        return datasets

    def describe(self) -> dict:
        info = super().describe()
        info["root"] = f"{self.name}(classes={list(self.classes) if self.classes else 'all'})"
        return info
