"""Safe file IO: atomic writes, safe checkpoint loading, image saving."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from diffedit_lab.utils.errors import UserError


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


def atomic_json_dump(obj: Any, path: str | os.PathLike) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, _write)


def load_weights(path: str | os.PathLike, what: str = "weights") -> dict[str, Any]:
    """Load a checkpoint safely: safetensors, or ``torch.load(weights_only=True)``.

    Raises a one-line :class:`UserError` naming ``what`` and the path when the file is absent or unreadable.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what}: file not found: '{path}' (set the config to the local path of the file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with arbitrary objects, ...
        raise UserError(f"{what}: cannot read '{path}': {type(exc).__name__}: {exc}") from exc


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images (B,3,H,W) -> uint8 (B,3,H,W)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def save_images(images: torch.Tensor, paths: list[str | os.PathLike]) -> None:
    """Save each [-1, 1] image to its path as PNG."""
    from PIL import Image

    for img, p in zip(to_uint8(images), paths, strict=True):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p)
