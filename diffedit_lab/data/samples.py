"""Real photos that ship inside scikit-image, so demos and tests see natural images without any download.

They are written once as PNG into a cache folder and then read by the very same folder code a user's
dataset goes through (including grayscale -> RGB conversion and non-square center crops), instead of being
special-cased in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from diffedit_lab.data.datamodule import ImageDataModule
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_write

# Bundled with scikit-image 0.26 (no pooch/network needed). Grayscale ones are kept grayscale on disk.
SAMPLE_NAMES: tuple[str, ...] = (
    "astronaut",  # portrait, 512x512 RGB (the only face)
    "chelsea",  # cat, 451x300 RGB
    "coffee",  # cup of coffee, 600x400 RGB
    "rocket",  # rocket on the launch pad, 640x427 RGB
    "camera",  # man with a camera, 512x512 grayscale
    "coins",  # coins, 384x303 grayscale
    "moon",  # moon surface, 512x512 grayscale
    "clock",  # wall clock, 400x300 grayscale
    "hubble_deep_field",  # galaxies, 1000x872 RGB
    "immunohistochemistry",  # stained tissue, 512x512 RGB
)


def load_sample(name: str) -> np.ndarray:
    """The uint8 array of one bundled sample, or a one-line UserError naming the ones that exist."""
    import skimage.data

    if name not in SAMPLE_NAMES:
        raise UserError(f"unknown sample image {name!r}; choose from {list(SAMPLE_NAMES)}")
    try:
        arr = getattr(skimage.data, name)()
    except Exception as exc:  # a scikit-image without the bundled file would try to download it
        raise UserError(f"scikit-image cannot provide the sample {name!r} offline: {exc}") from exc
    return np.asarray(arr, dtype=np.uint8)


def ensure_samples(root: str | os.PathLike, names: Sequence[str] = SAMPLE_NAMES) -> Path:
    """Write ``<root>/<name>.png`` for each missing sample (atomically, so parallel ranks are safe)."""
    root = Path(root)
    for name in names:
        target = root / f"{name}.png"
        if not target.is_file():
            image = Image.fromarray(load_sample(name))
            atomic_write(target, lambda tmp, image=image: image.save(tmp, format="PNG"))
    return root


class SampleImagesDataModule(ImageDataModule):
    """ImageDataModule over the bundled photos; ``names`` picks which (default: all of SAMPLE_NAMES)."""

    def __init__(self, root: str | os.PathLike, names: Sequence[str] | None = None, **kwargs):
        kwargs.setdefault("layout_hint", "bundled scikit-image photos are written to <root>/<name>.png on first use")
        super().__init__(root=root, **kwargs)
        self.names = tuple(names) if names else SAMPLE_NAMES
        unknown = [n for n in self.names if n not in SAMPLE_NAMES]
        if unknown:
            raise UserError(f"data.names: unknown sample images {unknown}; choose from {list(SAMPLE_NAMES)}")

    def _prepare_root(self) -> None:
        if self.root is None:
            raise UserError("data.root is not set (the samples config uses ${paths.cache_dir}/samples)")
        ensure_samples(self.root, self.names)

    def _include_entries(self) -> set[str] | None:
        """Only the requested names, even if the cache folder holds more from an earlier run."""
        wanted = set(self.names)
        extra = super()._include_entries()
        if extra is None:
            return wanted
        return {e for e in extra if e.rsplit("/", 1)[-1].rsplit(".", 1)[0] in wanted}
