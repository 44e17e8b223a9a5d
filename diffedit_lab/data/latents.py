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
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import load_weights


class CodeTensorDataset(Dataset):
    def __init__(self, codes: torch.Tensor):
        self.codes = codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"w": self.codes[i], "index": i}


class SeedDataset(Dataset):
    def __init__(self, first_seed: int, n: int):
        self.first_seed, self.n = first_seed, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"seed": self.first_seed + i, "index": i}


def load_codes(path: str | Path) -> torch.Tensor:
    """Read an (N, L, D) W+ tensor (a bare tensor, or a dict with one tensor / a ``latents``/``codes`` key)."""
    obj = load_weights(path, "W+ codes")
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
    return obj.float()


class LatentCodesDataModule(LightningDataModule):
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
        self.train_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def sampled(self) -> bool:
        return self.hparams.codes is None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        if self.sampled:
            base = int(hp.seed) * 1_000_000
            self.train_set = SeedDataset(base, int(hp.num_train))
            self.test_set = SeedDataset(base + 900_000, int(hp.num_test))
            return
        codes = load_codes(hp.codes)
        if hp.test_codes is not None:
            self.train_set, self.test_set = CodeTensorDataset(codes), CodeTensorDataset(load_codes(hp.test_codes))
        else:
            n_test = min(int(hp.test_size), len(codes) - 1)
            if n_test < 1:
                raise UserError(f"W+ codes '{hp.codes}' hold {len(codes)} code(s); need at least 2 to split")
            self.test_set, self.train_set = CodeTensorDataset(codes[:n_test]), CodeTensorDataset(codes[n_test:])

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            generator=torch.Generator().manual_seed(int(self.hparams.seed)),
        )

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.test_set, batch_size=self.hparams.eval_batch_size, shuffle=False, num_workers=self.hparams.num_workers
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
