"""W+ latent codes for generator-based editing (SDD).

Two sources, one item format:

* a ``.pt`` file holding an (N, L, D) tensor of W+ codes (e.g. e4e inversions of CelebA-HQ): items are
  ``{"w": (L, D) tensor, "index": i}``; the test split is ``test_codes`` if given, else the first ``test_size``
  codes (the rest train);
* nothing: items are ``{"seed": s, "index": i}``; the method maps each seed to z ~ N(0, I) and through its
  generator's mapping network. Train seeds are ``seed·10⁶ + i``, test seeds ``seed·10⁶ + 900000 + i``, so splits
  never overlap and every run with the same seed sees the same codes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from diffedit_lab.data.base import SplitDataModule
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.weights import load_weights


class CodeTensorDataset(Dataset):
    """Items ``{"w", "index"}``, plus ``"name"`` when the codes file names them (codes inverted from photos)."""

    def __init__(self, codes: torch.Tensor, names: list[str] | None = None):
        if names is not None and len(names) != len(codes):
            raise UserError(f"W+ codes file: {len(codes)} codes but {len(names)} names")
        self.codes, self.names = codes, names

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        item = {"w": self.codes[i], "index": i}
        if self.names is not None:
            item["name"] = self.names[i]
        return item


class SeedDataset(Dataset):
    """Items ``{"seed": first_seed + i, "index": i}`` for i < n: what a sampling loop (SDD codes from the mapping
    network, SDFT samples, the FID monitor's validation data) iterates over."""

    def __init__(self, first_seed: int, n: int):
        self.first_seed, self.n = int(first_seed), int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"seed": self.first_seed + i, "index": i}


def load_codes(path: str | Path) -> torch.Tensor:
    """Read an (N, L, D) W+ tensor (a bare tensor, or a dict with one tensor / a ``latents``/``codes`` key)."""
    return load_named_codes(path)[0]


def load_named_codes(path: str | Path) -> tuple[torch.Tensor, list[str] | None]:
    """:func:`load_codes` and, when the file is a dict with a ``names`` list (inverted photos), those names."""
    obj = load_weights(path, "W+ codes", expected="an (N, layers, dim) tensor of W+ codes, or a dict holding one")
    names = obj.get("names") if isinstance(obj, dict) else None
    if isinstance(obj, dict):
        for key in ("latents", "codes", "w", "wplus"):
            if key in obj:
                obj = obj[key]
                break
        else:
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
            obj = tensors[0] if len(tensors) == 1 else obj
    if not isinstance(obj, torch.Tensor) or obj.ndim != 3:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise UserError(f"W+ codes '{path}': expected an (N, layers, dim) tensor, got {shape}")
    return obj.float(), [str(n) for n in names] if isinstance(names, list) else None


class LatentCodesDataModule(SplitDataModule):
    """Serves ``train`` and ``test`` (no ``val``); the interface is :class:`~diffedit_lab.data.base.SplitDataModule`'s.

    Train batches drop the last incomplete batch and are shuffled by a seeded, resumable sampler.
    """

    def __init__(
        self,
        codes: str | None = None,
        test_codes: str | None = None,
        num_train: int = 100000,
        num_test: int = 100,
        test_size: int = 100,
        batch_size: int = 2,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)

    @property
    def sampled(self) -> bool:
        return self.hparams.codes is None

    def preflight(self) -> None:
        for key in ("codes", "test_codes"):
            path = getattr(self.hparams, key)
            if path is not None and not Path(str(path)).expanduser().is_file():
                raise UserError(f"data.{key}: no file at '{path}' (an (N, layers, dim) tensor of W+ codes, .pt)")

    def _build_datasets(self) -> dict[str, Dataset]:
        hp = self.hparams
        if self.sampled:
            base = int(hp.seed) * 1_000_000
            return {
                "train": SeedDataset(base, int(hp.num_train)),
                "test": SeedDataset(base + 900_000, int(hp.num_test)),
            }
        codes, names = load_named_codes(hp.codes)
        if hp.test_codes is not None:
            test = CodeTensorDataset(*load_named_codes(hp.test_codes))
            return {"train": CodeTensorDataset(codes, names), "test": test}
        n_test = min(int(hp.test_size), len(codes) - 1)
        if n_test < 1:
            raise UserError(f"W+ codes '{hp.codes}' hold {len(codes)} code(s); need at least 2 to split")
        head, tail = (names[:n_test], names[n_test:]) if names is not None else (None, None)
        return {"train": CodeTensorDataset(codes[n_test:], tail), "test": CodeTensorDataset(codes[:n_test], head)}

    def _loader_settings(self, split: str) -> dict:
        train = split == "train"
        return {
            "batch_size": int(self.hparams.batch_size if train else self.hparams.eval_batch_size),
            "num_workers": int(self.hparams.num_workers),
            "seed": int(self.hparams.seed),
            "drop_last": train,
        }
