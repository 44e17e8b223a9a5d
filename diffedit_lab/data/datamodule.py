"""ImageDataModule: one LightningDataModule for every image dataset (folders of files or LSUN LMDBs).

The datasets the three methods use differ only in where the files are and how they are split, so one class
with a few options replaces a class per dataset. Construction never touches the disk (configs can be
instantiated anywhere, e.g. in tests or on a login node); ``setup()`` lists, splits and checks the images
once and is idempotent.

Splits (``split_mode``):
  * ``folders``: ``<root>/{train,val,test}/`` when they exist (also ``valid``/``validation`` and LSUN's
    ``*_train_lmdb``/``*_val_lmdb``). A missing eval split falls back to the other one, then to train; with
    no split folders at all every split is the whole root (limited-data fine-tuning and FID against the
    target set both use all images).
  * ``list``: text files of relative paths per split; a split without a list gets the rest (train) or falls
    back like above (val/test).
  * ``ratio``: a seeded permutation of all images cut by ``val_fraction``/``test_fraction``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from diffedit_lab.data.base import SPLITS, SplitDataModule
from diffedit_lab.data.images import (
    IMAGE_EXTENSIONS,
    RESIZE_MODES,
    FolderSource,
    ImageDataset,
    ImageSource,
    target_size,
)
from diffedit_lab.data.lsun import LmdbSource, is_lmdb
from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["SPLITS", "ImageDataModule"]
FORMATS = ("folder", "lmdb", "auto")
SPLIT_MODES = ("folders", "list", "ratio")
VERIFY_LEVELS = ("none", "header", "full")
_SPLIT_DIR_PATTERNS = {
    "train": ("train", "*_train_lmdb"),
    "val": ("val", "valid", "validation", "*_val_lmdb"),
    "test": ("test", "*_test_lmdb"),
}
_EVAL_FALLBACK = {"train": ("train",), "val": ("val", "test", "train"), "test": ("test", "val", "train")}
_CHECK_CHUNK = 512


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UserError(f"data.{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise UserError(f"data.{name} must be in [0, 1), got {value!r}")
    return float(value)


class ImageDataModule(SplitDataModule):
    """Items are ``{"image": (3,H,W) float in [-1,1], "path": str relative to root, "index": int}``.

    Serves ``train``/``val``/``test`` (see :class:`~diffedit_lab.data.base.SplitDataModule` for the interface).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        format: str = "auto",
        resolution: int | Sequence[int] = 256,
        resize_mode: str = "center_crop",
        hflip: bool = False,
        split_mode: str = "folders",
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_images: int | None = None,
        exclude_list: str | None = None,
        include_list: str | None = None,
        subdir: str | None = None,
        verify: str = "header",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        layout_hint: str = "expected image files (png/jpg/jpeg/webp/bmp/tif) under <root>",
    ):
        super().__init__()
        self.root = Path(os.path.expanduser(str(root))) if root is not None else None
        self.format = _choice("format", format, FORMATS)
        self.size = target_size(resolution)
        self.resize_mode = _choice("resize_mode", resize_mode, RESIZE_MODES)
        self.hflip = bool(hflip)
        self.split_mode = _choice("split_mode", split_mode, SPLIT_MODES)
        self.split_lists = {"train": train_list, "val": val_list, "test": test_list}
        self.val_fraction = _fraction("val_fraction", val_fraction)
        self.test_fraction = _fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError("data.val_fraction + data.test_fraction must be < 1 so that train is not empty")
        if max_images is not None and int(max_images) < 1:
            raise UserError(f"data.max_images must be a positive int or null, got {max_images!r}")
        self.max_images = int(max_images) if max_images is not None else None
        self.exclude_list = exclude_list
        self.include_list = include_list
        self.subdir = subdir
        self.verify = _choice("verify", verify, VERIFY_LEVELS)
        if int(batch_size) < 1 or (eval_batch_size is not None and int(eval_batch_size) < 1):
            raise UserError(f"data.batch_size/eval_batch_size must be >= 1: {batch_size}/{eval_batch_size}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.seed = int(seed)
        self.layout_hint = _one_line(layout_hint)
        self.num_skipped = 0
        self.skipped_examples: list[str] = []

    # ----------------------------------------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        self._prepare_root()

    def _prepare(self) -> None:
        self._prepare_root()

    def _prepare_root(self) -> None:
        """Hook for subclasses that create their root on first use (bundled samples)."""

    def preflight(self) -> None:
        """Start-up checks, before any model is built: the root exists and holds at least one image (or is an
        LMDB), and every list file named (exclude/include/split lists) exists. Reads no image."""
        self._prepare_root()
        root = self._check_root()
        for key, name in (("exclude_list", self.exclude_list), ("include_list", self.include_list),
                          *((f"{s}_list", n) for s, n in self.split_lists.items())):  # fmt: skip
            if name:
                _resolve_list(name, key, root)
        if self.format != "lmdb" and not is_lmdb(root) and not _has_image(root):
            raise self._layout_error(f"no images found under '{root}'")

    def _layout_error(self, problem: str) -> UserError:
        return UserError(_one_line(f"{problem}; {self.layout_hint} (set data.root=<dir> or paths.data_dir=<dir>)"))

    def _check_root(self) -> Path:
        if self.root is None:
            raise self._layout_error("data.root is not set")
        if not self.root.exists():
            raise self._layout_error(f"data root not found: '{self.root}'")
        if not self.root.is_dir():
            raise self._layout_error(f"data root is not a directory: '{self.root}'")
        return self.root

    def _make_source(self, path: Path) -> ImageSource:
        if self.format == "lmdb" or (self.format == "auto" and is_lmdb(path)):
            if not is_lmdb(path):
                raise self._layout_error(f"data.format=lmdb but '{path}' has no data.mdb")
            return LmdbSource(path)
        return FolderSource(path)

    def _containers(self, root: Path) -> dict[str, tuple[Path, str]]:
        """Per split: the folder (or LMDB) to read and the prefix that makes its keys relative to root."""
        found: dict[str, Path] = {}
        if self.split_mode == "folders":
            for split, patterns in _SPLIT_DIR_PATTERNS.items():
                for pattern in patterns:
                    matches = sorted(p for p in root.glob(pattern) if p.is_dir())
                    if matches:
                        found[split] = matches[0]
                        break
        out: dict[str, tuple[Path, str]] = {}
        for split in SPLITS:
            chosen = next((found[s] for s in _EVAL_FALLBACK[split] if s in found), None)
            if found and chosen is None:  # split folders exist but no train/ folder
                continue
            base = chosen if chosen is not None else root
            if self.subdir:
                base = base / self.subdir
            prefix = base.relative_to(root).as_posix() + "/" if base != root else ""
            out[split] = (base, prefix)
        return out

    def _build_datasets(self) -> dict[str, Dataset]:
        root = self._check_root()
        containers = self._containers(root)
        sources: dict[Path, ImageSource] = {}
        listed: dict[Path, list[str]] = {}
        for path, _ in containers.values():
            if path not in sources:
                if not path.is_dir():
                    raise self._layout_error(f"expected folder not found: '{path}'")
                sources[path] = self._make_source(path)
                listed[path] = sources[path].keys()
        if not any(listed.values()) and self.split_mode != "list":
            raise self._layout_error(f"no images found under '{root}'")

        keys = self._split_keys(containers, listed)
        checker = _Checker(self.verify)
        datasets: dict[str, Dataset] = {}
        for split in SPLITS:
            if split not in containers:
                datasets[split] = ImageDataset(FolderSource(root), [], self.size)
                continue
            path, prefix = containers[split]
            good = checker.take(sources[path], keys[split], self.max_images, prefix)
            datasets[split] = ImageDataset(
                sources[path], good, self.size, self.resize_mode, self.hflip and split == "train", prefix
            )
        self.num_skipped = len(checker.bad)
        self.skipped_examples = sorted(checker.bad)[:3]
        if self.num_skipped:
            log.warning("skipped %d unreadable files (e.g. %s)", self.num_skipped, ", ".join(self.skipped_examples))
        if not any(len(ds) for ds in datasets.values()):
            if self.num_skipped:
                raise self._layout_error(
                    f"none of the images under '{root}' could be read ({self.num_skipped} unreadable, "
                    f"e.g. {', '.join(self.skipped_examples)})"
                )
            raise self._layout_error(f"no images selected under '{root}' (check the lists and data.subdir)")
        return datasets

    # ---------------------------------------------------------------------------------------------- splits
    def _split_keys(
        self, containers: dict[str, tuple[Path, str]], listed: dict[Path, list[str]]
    ) -> dict[str, list[str]]:
        include = self._include_entries()
        exclude = _read_entries(self.exclude_list, "exclude_list", self.root) if self.exclude_list else None
        keys: dict[str, list[str]] = {}
        for split, (path, prefix) in containers.items():
            keys[split] = [k for k in listed[path] if _selected(prefix + k, include, exclude)]
        if include is not None and not any(keys.values()) and any(listed.values()):
            raise UserError(
                f"data.include_list: none of its {len(include)} entries match an image under '{self.root}' "
                "(entries are paths relative to root, file names or stems)"
            )
        if self.split_mode == "ratio":
            return self._ratio_split(keys["train"])
        if self.split_mode == "list":
            return self._list_split(keys["train"], include, exclude)
        return keys

    def _include_entries(self) -> set[str] | None:
        """Hook: entries an item must match (None = all). Subclasses may narrow it (sample names)."""
        if not self.include_list:
            return None
        return _read_entries(self.include_list, "include_list", self.root)

    def _ratio_split(self, keys: list[str]) -> dict[str, list[str]]:
        n = len(keys)
        n_val, n_test = (_count(n, f) for f in (self.val_fraction, self.test_fraction))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        return {s: [keys[i] for i in sorted(idx)] for s, idx in zip(SPLITS, (train, val, test))}

    def _list_split(
        self, all_keys: list[str], include: set[str] | None, exclude: set[str] | None
    ) -> dict[str, list[str]]:
        given: dict[str, list[str]] = {}
        for split, name in self.split_lists.items():
            if name:
                entries = _read_lines(name, f"{split}_list", self.root)
                given[split] = [k for k in entries if _selected(k, include, exclude)]
        if not given:
            raise UserError("data.split_mode=list needs at least one of data.train_list/val_list/test_list")
        if "train" not in given:
            taken = {k for ks in given.values() for k in ks}
            given["train"] = [k for k in all_keys if k not in taken]
        return {s: next(given[f] for f in _EVAL_FALLBACK[s] if f in given) for s in SPLITS}

    # --------------------------------------------------------------------------------------------- loaders
    def _check_loadable(self, split: str, dataset: Dataset) -> None:
        if len(dataset) == 0:
            if split == "train":
                raise self._layout_error(f"the train split under '{self.root}' is empty")
            log.warning("the %s split is empty; its loop will be skipped", split)

    def _loader_settings(self, split: str) -> dict:
        train = split == "train"
        batch = self.batch_size if train else self.eval_batch_size
        return {
            "batch_size": batch,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "seed": self.seed,
            "drop_last": train and len(self.dataset(split)) >= batch,
            "flips": self.hflip and train,  # the sampler draws the flip bits: resumable augmentation
        }

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def describe(self) -> dict:
        """A small summary to log at the start of a run: where the data came from and how much of it."""
        self.setup()
        assert self._datasets is not None
        info: dict = {"root": str(self.root), "resolution": list(self.size)}
        info.update({split: len(ds) for split, ds in self._datasets.items()})
        info["skipped"] = self.num_skipped
        return info


class _Checker:
    """Checks images in parallel threads (I/O bound), remembers results, and takes up to ``limit`` good keys
    per split, checking only as many as needed so ``max_images`` keeps setup fast on huge datasets."""

    def __init__(self, level: str):
        self.level = level
        self.bad: set[str] = set()
        self._done: dict[tuple[int, str], bool] = {}
        self._pool_size = min(16, 4 * (os.cpu_count() or 1))

    def take(self, source: ImageSource, keys: list[str], limit: int | None, prefix: str) -> list[str]:
        if self.level == "none":  # millions of LSUN keys: no per-key work at all
            return keys[:limit]
        good: list[str] = []
        with ThreadPoolExecutor(self._pool_size) as pool:
            for start in range(0, len(keys), _CHECK_CHUNK):
                chunk = keys[start : start + _CHECK_CHUNK]
                todo = [k for k in chunk if (id(source), k) not in self._done]
                for key, ok in zip(todo, pool.map(lambda k: source.check(k, self.level), todo)):
                    self._done[(id(source), key)] = ok
                    if not ok:
                        self.bad.add(prefix + key)
                good.extend(k for k in chunk if self._done[(id(source), k)])
                if limit is not None and len(good) >= limit:
                    return good[:limit]
        return good


def _has_image(root: Path) -> bool:
    """At least one image file (or LMDB) anywhere under ``root`` — stops at the first one found."""
    for _folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            return True
        if "data.mdb" in files:
            return True
    return False


def _count(n: int, fraction: float) -> int:
    """Images in an eval split: at least one when asked for a non-zero fraction and the data allows it."""
    if fraction <= 0 or n < 3:
        return 0
    return max(1, round(n * fraction))


def _resolve_list(name: str, key: str, root: Path | None) -> Path:
    path = Path(os.path.expanduser(str(name)))
    candidates = [path] if path.is_absolute() else [p for p in ((root / path) if root else None, path) if p]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"data.{key}: list file not found: '{name}' (a text file of relative paths, one a line)")


def _read_lines(name: str, key: str, root: Path | None) -> list[str]:
    """Non-empty, non-comment lines of a list file, normalised to POSIX relative paths."""
    text = _resolve_list(name, key, root).read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        line = line.strip().replace("\\", "/")
        if line and not line.startswith("#"):
            out.append(line[2:] if line.startswith("./") else line)
    return out


def _read_entries(name: str, key: str, root: Path | None) -> set[str]:
    return set(_read_lines(name, key, root))


def _selected(rel: str, include: Iterable[str] | None, exclude: Iterable[str] | None) -> bool:
    """An entry matches an image by relative path, file name or stem (lists from other tools vary)."""
    name = rel.rsplit("/", 1)[-1]
    forms = {rel, name, name.rsplit(".", 1)[0]}
    if include is not None and forms.isdisjoint(include):
        return False
    return exclude is None or forms.isdisjoint(exclude)
