"""Safe file IO: atomic writes and image saving (weights loading lives in :mod:`diffedit_lab.utils.weights`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffedit_lab.utils.weights import load_weights

__all__ = [
    "atomic_dir",
    "atomic_json_dump",
    "atomic_torch_save",
    "atomic_write",
    "load_weights",
    "save_grid",
    "save_images",
]


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_dir(path: str | os.PathLike, write_fn) -> Path:
    """Call ``write_fn(tmp_dir)`` then put the folder at ``path`` (a previous one is replaced only after the new
    one is complete), so a crash never leaves a half-written model folder."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = path.with_name(f".{path.name}.old")
    try:
        write_fn(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def atomic_json_dump(obj: Any, path: str | os.PathLike) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, _write)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images → float [0, 1] (torchvision's image range), detached, on the same device."""
    return (images.detach().float().clamp(-1, 1) + 1) / 2


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images → uint8, rounded exactly as ``torchvision.utils.save_image`` writes PNGs
    (``floor(255·(x+1)/2 + 0.5)``), on the same device."""
    return to_unit(images).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_images(images: torch.Tensor, paths: Sequence[str | os.PathLike]) -> None:
    """Save each [-1, 1] image (B,3,H,W) to its path (format from the extension, e.g. PNG)."""
    from torchvision.utils import save_image

    images = to_unit(images).cpu()
    if len(images) != len(paths):
        raise ValueError(f"save_images: {len(images)} images but {len(paths)} paths")
    for image, path in zip(images, paths, strict=True):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_image(image, path)


def save_grid(
    images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, padding: int = 2, pad_value: float = 1.0
) -> Path:
    """Save [-1, 1] images (B,3,H,W) as one grid image, ``nrow`` per row, separated by ``padding`` pixels of
    ``pad_value`` (in [0, 1]: 1 is white)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_unit(images).cpu(), path, nrow=max(1, int(nrow)), padding=padding, pad_value=pad_value)
    return path
