"""The edit stage's training set: the first ``train_images`` images of the train split (the paper trains each
attribute on about 100 images), served by the same seeded, resumable loader as every training stage."""

from __future__ import annotations

from lightning import LightningDataModule

from diffedit_lab.data.base import ItemRange


class EditTrainData(LightningDataModule):
    """Wraps the run's datamodule: training batches of the first ``n`` images of its train split."""

    def __init__(self, datamodule, n: int | None) -> None:
        super().__init__()
        self.datamodule, self.n = datamodule, n

    def train_dataloader(self):
        dm = self.datamodule
        return dm.train_loader_for(ItemRange(dm.dataset("train"), 0, self.n), drop_last=True, cap_batch=True)
