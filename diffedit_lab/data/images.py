"""Image folders as datasets: listing, robust decoding to RGB, resizing, and conversion to [-1, 1] tensors.

Resize, crop and mirror are ``torchvision.transforms.v2``'s functionals on the PIL image (bicubic with PIL's
antialiasing, as before); what torchvision has no counterpart for stays here: JPEG draft decoding, EXIF/mode
normalisation, the crop offset rounding of the released code, retries on unreadable files.

Real datasets are messy: grayscale scans, RGBA PNGs, palette GIF-likes, CMYK JPEGs, 16-bit PNGs, EXIF-rotated
phone photos, odd aspect ratios, the occasional truncated file. Everything here turns any of them into a
``(3, H, W)`` float tensor in [-1, 1] so the methods never see the mess.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
RESIZE_MODES = ("center_crop", "resize")
# Consecutive neighbours tried when an item that passed the setup check still fails to decode.
_MAX_LOAD_RETRIES = 8


class ImageSource(Protocol):
    """Where images live (a folder or an LMDB); keys are the strings items report as their path."""

    def keys(self) -> list[str]: ...

    def open(self, key: str) -> Image.Image: ...

    def check(self, key: str, level: str) -> bool: ...


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of all images below ``folder``, recursively, sorted so runs are reproducible.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``, our own ``.tmp`` files) are ignored.
    """
    folder = Path(folder)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(folder)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, honouring EXIF rotation, 16-bit depth and transparency.

    ``Image.convert("RGB")`` alone clips 16-bit grayscale to white and shows whatever colour hides under
    transparent pixels, so those two cases are handled explicitly (alpha is composited onto white).
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            peak = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        else:
            peak = 65535.0 if (img.mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr8 = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def target_size(resolution: int | Sequence[int]) -> tuple[int, int]:
    """Normalise ``resolution`` (an int or ``[H, W]``) to ``(H, W)``, rejecting nonsense with a clear line."""
    if isinstance(resolution, int):
        hw = (resolution, resolution)
    else:
        values = list(resolution)
        if len(values) != 2:
            raise UserError(f"data.resolution must be an int or [height, width], got {resolution!r}")
        hw = (int(values[0]), int(values[1]))
    if min(hw) < 1:
        raise UserError(f"data.resolution must be positive, got {resolution!r}")
    return hw


def resize_image(img: Image.Image, size: tuple[int, int], mode: str = "center_crop") -> Image.Image:
    """Resize to ``size`` = (H, W): ``center_crop`` keeps aspect (short side fits, centre crop), ``resize``
    stretches. Bicubic with PIL's area-aware filtering, so downscaling 1024 -> 256 does not alias."""
    height, width = size
    w, h = img.size
    if mode == "resize":
        return img if (w, h) == (width, height) else TF.resize(img, [height, width], InterpolationMode.BICUBIC)
    if mode != "center_crop":
        raise UserError(f"data.resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    scale = max(height / h, width / w)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = TF.resize(img, [new_h, new_w], InterpolationMode.BICUBIC)
    # the offset rounds down, as the released code's PIL crop did (torchvision's center_crop rounds half up)
    return TF.crop(img, (new_h - height) // 2, (new_w - width) // 2, height, width)


def draft_for(img: Image.Image, size: tuple[int, int], mode: str) -> None:
    """Let JPEG decoding skip resolution we would throw away (DCT scaling): big photos load much faster."""
    if img.format != "JPEG":
        return
    height, width = size
    w, h = img.size
    if mode == "center_crop":
        scale = max(height / h, width / w)
        want = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
    else:
        want = (width, height)
    if want[0] < w and want[1] < h:
        img.draft("RGB", want)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float tensor (3, H, W) in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def decode_image(
    img: Image.Image, size: tuple[int, int], mode: str = "center_crop", flip: bool = False
) -> torch.Tensor:
    """The whole per-image pipeline: draft, RGB conversion, resize/crop, optional mirror, tensor."""
    draft_for(img, size, mode)
    out = resize_image(to_rgb(img), size, mode)
    if flip:
        out = TF.horizontal_flip(out)
    return pil_to_tensor(out)


def check_image(open_fn: Callable[[], Image.Image], level: str) -> bool:
    """``header``: the file parses as an image of non-zero size (cheap); ``full``: it decodes completely."""
    if level == "none":
        return True
    try:
        with open_fn() as img:
            if min(img.size) < 1:
                return False
            if level == "full":
                img.load()
        return True
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        return False


class FolderSource:
    """Images stored as files below ``root``; keys are paths relative to it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def keys(self) -> list[str]:
        return list_image_files(self.root)

    def open(self, key: str) -> Image.Image:
        return Image.open(self.root / key)

    def check(self, key: str, level: str) -> bool:
        if level == "none":
            return True
        return check_image(lambda: Image.open(self.root / key), level)

    def __repr__(self) -> str:
        return f"FolderSource('{self.root}')"


def load_image(path: str | os.PathLike, size: tuple[int, int], resize_mode: str = "resize") -> torch.Tensor | None:
    """One image file as a [-1, 1] tensor (3, H, W) through the dataset pipeline (EXIF rotation, any mode to RGB,
    bicubic resize; ``resize`` stretches, ``center_crop`` keeps aspect), or None with a warning if unreadable.

    No JPEG draft decoding: evaluation compares pixels, so every image is decoded at full resolution first.
    """
    try:
        with Image.open(path) as img:
            return pil_to_tensor(resize_image(to_rgb(img), size, resize_mode))
    except UserError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        log.warning("skipping unreadable image '%s': %s: %s", path, type(exc).__name__, exc)
        return None


def open_bytes(data: bytes) -> Image.Image:
    """Decode encoded image bytes (webp/jpeg/png...) lazily, like ``Image.open`` on a file."""
    return Image.open(io.BytesIO(data))


def split_draw(key: int | tuple[int, bool], hflip: bool) -> tuple[int, bool]:
    """A dataset key is an index, or ``(index, flip)`` from a sampler that draws the flips itself (resumable,
    see :mod:`diffedit_lab.data.sampler`). A bare index with ``hflip`` flips at random (global RNG)."""
    if isinstance(key, tuple | list):
        index, flip = key
        return int(index), bool(flip) and hflip
    return int(key), hflip and bool(torch.rand(()) < 0.5)


class ImageDataset(Dataset):
    """Items ``{"image": (3,H,W) in [-1,1], "path": str, "index": int}`` from a source and a fixed key list.

    ``prefix`` makes ``path`` relative to the dataset root even when the source is a split subfolder.
    Keys are indices or ``(index, flip)`` pairs (:func:`split_draw`).
    A file that passed the setup check but fails to decode later (e.g. truncated after its header) is
    replaced by the next readable item with a warning, so one bad file does not kill a long run.
    """

    def __init__(
        self,
        source: ImageSource,
        keys: Sequence[str],
        size: tuple[int, int],
        resize_mode: str = "center_crop",
        hflip: bool = False,
        prefix: str = "",
    ):
        self.source = source
        self.keys = list(keys)
        self.size = size
        self.resize_mode = resize_mode
        self.hflip = hflip
        self.prefix = prefix

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict:
        index, flip = split_draw(key, self.hflip)
        for attempt in range(min(_MAX_LOAD_RETRIES, len(self.keys))):
            key = self.keys[(index + attempt) % len(self.keys)]
            try:
                with self.source.open(key) as img:
                    image = decode_image(img, self.size, self.resize_mode, flip)
                return {"image": image, "path": self.prefix + key, "index": index}
            except Exception as exc:
                log.warning("cannot decode %s (%s: %s); using the next image", key, type(exc).__name__, exc)
        raise UserError(
            f"cannot decode {_MAX_LOAD_RETRIES} consecutive images starting at '{self.keys[index]}' in "
            f"{self.source!r}; check the data or set data.verify=full to drop unreadable files at setup"
        )
