"""The edit stage's training set: the first ``train_images`` images of the train split (the paper trains each
attribute on about 100 images), served by the same seeded, resumable loader as every training stage."""

from __future__ import annotations

from lightning import LightningDataModule
from torch.utils.data import Dataset

from diffedit_lab.data.sampler import resumable_train_loader


class FirstImages(Dataset):
    """``dataset`` restricted to its first ``n`` items; passes the sampler's ``(index, flip)`` keys through."""

    def __init__(self, dataset: Dataset, n: int | None) -> None:
        self.dataset = dataset
        self.n = len(dataset) if n is None else min(int(n), len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[key]


class EditTrainData(LightningDataModule):
    """Wraps the run's datamodule: training batches of :class:`FirstImages` of its train split."""

    def __init__(self, datamodule, n: int | None) -> None:
        super().__init__()
        self.datamodule, self.n = datamodule, n

    def train_dataloader(self):
        dm = self.datamodule
        dm.setup("fit")
        data = FirstImages(dm.dataset("train"), self.n)
        o = dm._loader_settings("train")
        batch = min(o["batch_size"], len(data))
        return resumable_train_loader(
            data,
            batch,
            o["seed"],
            drop_last=True,
            flips=o.get("flips", False),
            num_workers=o["num_workers"],
            pin_memory=o.get("pin_memory", False),
        )
