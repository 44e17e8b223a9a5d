"""The interface every datamodule in :mod:`diffedit_lab.data` has, whatever it serves (images or latent codes).

* ``preflight()``: cheap checks of roots and files, run at start-up before any model is built;
* ``setup(stage=None)``: builds the split datasets once (idempotent; construction never touches the disk);
* ``dataset(split)`` for ``split`` in ``train``/``val``/``test``: the dataset of that split, set up on first use,
  or a one-line :class:`UserError` naming the splits the datamodule does have;
* ``train_dataloader()``: seeded, resumable shuffling (:mod:`diffedit_lab.data.sampler`), so a run resumed from a
  Lightning checkpoint sees exactly the batches an uninterrupted run would have seen;
* ``test_dataloader()`` and ``predict_dataloader()`` (the test split again), sequential.
"""

from __future__ import annotations

import warnings

import lightning as L
from torch.utils.data import DataLoader, Dataset, Subset

from diffedit_lab.data.sampler import ResumableDataLoader, resumable_train_loader
from diffedit_lab.utils.errors import UserError

SPLITS = ("train", "val", "test")


class SplitDataModule(L.LightningDataModule):
    """Subclasses implement ``_build_datasets()`` → ``{split: Dataset}`` (a subset of :data:`SPLITS`) and the
    loader settings below; everything else is shared."""

    def __init__(self) -> None:
        super().__init__()
        self._datasets: dict[str, Dataset] | None = None

    # ----------------------------------------------------------------------------------------- subclass API
    def _build_datasets(self) -> dict[str, Dataset]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Hook run once before the datasets are built (e.g. writing bundled sample images)."""

    def preflight(self) -> None:
        """Cheap start-up checks (roots and files exist), run before any model is built. Reads no images."""

    def _loader_settings(self, split: str) -> dict:
        """``batch_size``, ``num_workers``, ``pin_memory``, ``seed``, ``drop_last`` and ``flips`` for ``split``."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- interface
    def setup(self, stage: str | None = None) -> None:
        if self._datasets is None:
            self._prepare()
            self._datasets = self._build_datasets()

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this datamodule serves (after setup)."""
        self.setup()
        assert self._datasets is not None
        return tuple(s for s in SPLITS if s in self._datasets)

    def dataset(self, split: str) -> Dataset:
        """The dataset of one split (``train``/``val``/``test``), setting up on first use."""
        if split not in SPLITS:
            raise UserError(f"unknown data split {split!r}; choose from {list(SPLITS)}")
        self.setup()
        assert self._datasets is not None
        if split not in self._datasets:
            raise UserError(f"{type(self).__name__} has no '{split}' split (it serves: {', '.join(self.splits)})")
        return self._datasets[split]

    @property
    def train_set(self) -> Dataset:
        """Deprecated alias of ``dataset("train")``."""
        warnings.warn('datamodule.train_set is deprecated; use datamodule.dataset("train")', DeprecationWarning, 2)
        return self.dataset("train")

    def _check_loadable(self, split: str, dataset: Dataset) -> None:
        """Hook: complain about an empty split (the image datamodule raises for an empty train split)."""

    def train_loader_for(
        self, dataset: Dataset, drop_last: bool | None = None, cap_batch: bool = False
    ) -> ResumableDataLoader:
        """The train loader this datamodule builds (seeded resumable order, flips, workers), over ``dataset`` — e.g.
        a part of the train split a stage trains on (:class:`ItemRange`); ``cap_batch``: at most its length."""
        o = self._loader_settings("train")
        batch = min(o["batch_size"], max(1, len(dataset))) if cap_batch else o["batch_size"]
        return resumable_train_loader(
            dataset,
            batch,
            o["seed"],
            drop_last=o["drop_last"] if drop_last is None else drop_last,
            flips=o.get("flips", False),
            num_workers=o["num_workers"],
            pin_memory=o.get("pin_memory", False),
        )

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        self._check_loadable(split, dataset)
        o = self._loader_settings(split)
        if split == "train":
            return self.train_loader_for(dataset)
        return DataLoader(
            dataset,
            batch_size=o["batch_size"],
            shuffle=False,
            num_workers=o["num_workers"],
            pin_memory=o.get("pin_memory", False),
            persistent_workers=o["num_workers"] > 0,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        return self._loader("train")  # type: ignore[return-value]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order."""
        return self._loader("test")


def eval_batch_size(datamodule) -> int:
    """The batch size inference uses on ``datamodule``: its ``eval_batch_size``, else its ``batch_size``, else 8."""
    hp = getattr(datamodule, "hparams", {}) or {}
    return int(hp.get("eval_batch_size") or hp.get("batch_size") or 8)


def split_loader(
    datamodule, split: str, limit: int | None, batch_size: int, what: str, key: str | None = "image"
) -> DataLoader:
    """The first ``limit`` items of ``split`` in order (what inference stages edit, reconstruct or score). A missing
    datamodule, an empty split or items without ``key`` (e.g. latent codes where images are needed) is one line
    naming ``what`` needed them."""
    if datamodule is None or not hasattr(datamodule, "dataset"):
        raise UserError(f"{what} needs images: choose an image dataset (data=celebahq, data.root=…)")
    ds = datamodule.dataset(split)
    if limit is not None and limit < len(ds):
        ds = Subset(ds, range(limit))
    if len(ds) == 0:
        raise UserError(f"{what}: the {split} split of the data is empty")
    if key is not None and key not in ds[0]:
        raise UserError(f"{what} needs images: data={type(datamodule).__name__} has no '{key}' items")
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


class ItemRange(Dataset):
    """Items ``start … stop−1`` of ``dataset`` as a dataset of their own; passes the resumable sampler's
    ``(index, flip)`` keys through (``torch.utils.data.Subset`` does not)."""

    def __init__(self, dataset: Dataset, start: int = 0, stop: int | None = None) -> None:
        n = len(dataset)
        self.dataset, self.start = dataset, max(0, min(int(start), n))
        self.stop = n if stop is None else max(self.start, min(int(stop), n))

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        if not 0 <= index < len(self):
            raise IndexError(index)
        return (
            self.dataset[(self.start + index, *key[1:])] if isinstance(key, tuple) else self.dataset[self.start + key]
        )
