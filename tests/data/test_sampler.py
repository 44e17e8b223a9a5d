"""Resumable shuffling: a loader restored from a state (or a Lightning checkpoint) continues with exactly the
batches an uninterrupted loader would have produced, mid-epoch and across epoch boundaries."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import Dataset

from diffedit_lab.data.sampler import ResumableDataLoader, ResumableRandomSampler, resumable_train_loader


class Indices(Dataset):
    """Item i is i (or (i, flip) passed through), so batches show exactly which samples were drawn."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        index, flip = key if isinstance(key, tuple) else (key, False)
        return torch.tensor([index, int(flip)])


def loader(n=10, batch_size=3, seed=5, drop_last=True, flips=False, num_workers=0) -> ResumableDataLoader:
    return resumable_train_loader(
        Indices(n), batch_size, seed, drop_last=drop_last, flips=flips, num_workers=num_workers
    )


def batches(dl, k: int | None = None, epochs: int = 1) -> list[list[list[int]]]:
    """``k`` batches from ``dl`` (or ``epochs`` whole passes), as lists: new passes start when one ends."""
    out: list = []
    for _ in range(epochs if k is None else 10**6):
        for batch in dl:
            out.append(batch.tolist())
            if k is not None and len(out) == k:
                return out
    return out


def test_order_depends_only_on_seed_and_epoch():
    a, b = ResumableRandomSampler(20, seed=3), ResumableRandomSampler(20, seed=3)
    assert a.epoch_order(0) == b.epoch_order(0) and sorted(a.epoch_order(0)) == list(range(20))
    assert a.epoch_order(0) != a.epoch_order(1)
    assert a.epoch_order(0) != ResumableRandomSampler(20, seed=4).epoch_order(0)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global RNG plays no part
    assert list(b) == first == a.epoch_order(0)
    assert list(a) == a.epoch_order(1)  # a finished pass moves on to the next epoch


def test_set_epoch_restarts_only_a_different_epoch():
    s = ResumableRandomSampler(8, seed=0)
    s.load_state_dict({"epoch": 2, "position": 5})
    s.set_epoch(2)  # what Lightning does right after restoring: keep the position
    assert list(s) == s.epoch_order(2)[5:]
    s.set_epoch(3)
    assert list(s) == s.epoch_order(3)


@pytest.mark.parametrize(
    ("k", "drop_last", "flips"),
    [
        (1, True, False),
        (2, True, False),  # mid-epoch
        (3, True, False),  # exactly at the epoch boundary (10 samples, batch 3: the remainder is dropped)
        (5, True, True),  # inside the second epoch, with flip bits
        (4, False, False),  # boundary with a short last batch kept
        (6, False, True),
    ],
)
def test_restored_loader_continues_like_an_uninterrupted_one(k, drop_last, flips):
    uninterrupted = batches(loader(drop_last=drop_last, flips=flips), epochs=3)
    first = loader(drop_last=drop_last, flips=flips)
    assert batches(first, k) == uninterrupted[:k]
    state = first.state_dict()
    resumed = loader(drop_last=drop_last, flips=flips)
    resumed.load_state_dict(state)
    rest = batches(resumed, len(uninterrupted) - k)
    assert rest == uninterrupted[k:]


def test_state_counts_batches_handed_out_not_indices_prefetched_by_workers():
    uninterrupted = batches(loader(), epochs=2)
    first = loader(num_workers=2)
    assert batches(first, 2) == uninterrupted[:2]
    state = first.state_dict()
    assert state["sampler"]["epoch"] == 0 and state["sampler"]["position"] == 6
    resumed = loader(num_workers=2)
    resumed.load_state_dict(state)
    assert batches(resumed, len(uninterrupted) - 2) == uninterrupted[2:]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_abandoned_pass_continues_where_consumption_stopped(num_workers):
    uninterrupted = batches(loader(), epochs=2)
    dl = loader(num_workers=num_workers)
    assert next(iter(dl)).tolist() == uninterrupted[0]  # workers pulled more indices than this one batch
    assert batches(dl, len(uninterrupted) - 1) == uninterrupted[1:]


def test_flip_bits_are_drawn_from_the_seed():
    a, b = batches(loader(flips=True), epochs=2), batches(loader(flips=True), epochs=2)
    assert a == b
    bits = [sample[1] for batch in a for sample in batch]
    assert set(bits) == {0, 1}
    assert [s[0] for batch in a for s in batch] == [s[0] for batch in batches(loader(), epochs=2) for s in batch]


def test_ranks_shard_the_same_permutation():
    shards = [ResumableRandomSampler(11, seed=2, num_replicas=3, rank=r) for r in range(3)]
    orders = [s.epoch_order(0) for s in shards]
    assert all(len(o) == len(s) == 4 for o, s in zip(orders, shards))  # 11 padded to 12
    assert set(itertools.chain(*orders)) == set(range(11))
    interleaved = [x for row in zip(*orders) for x in row]
    full = ResumableRandomSampler(11, seed=2, num_replicas=1, rank=0).epoch_order(0)
    assert interleaved == full + full[:1]


def test_changed_dataset_restarts_the_epoch(caplog):
    s = ResumableRandomSampler(10, seed=0)
    s.load_state_dict({"epoch": 1, "position": 4, "seed": 0, "n": 12, "num_replicas": 1})
    assert (s.epoch, s.position) == (1, 0)
    assert "restarts from its beginning" in caplog.text


def test_non_resumable_sampler_has_empty_state():
    dl = ResumableDataLoader(Indices(4), batch_size=2)  # sequential sampler: nothing to resume
    assert dl.state_dict() == {}
    dl.load_state_dict({})
    assert [b[:, 0].tolist() for b in dl] == [[0, 1], [2, 3]]


# ------------------------------------------------------------------------------------ through Lightning
class Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[:, 0].tolist())
        return self.w * batch.float().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(steps: int, root, ckpt_path=None) -> list[list[int]]:
    module = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="{step}")],
    )
    trainer.fit(module, train_dataloaders=loader(n=7, batch_size=2), ckpt_path=ckpt_path)
    return module.seen


# 7 samples, batch 2, drop_last: 3 batches an epoch, the 7th sample dropped (the epoch counts as used up).
@pytest.mark.parametrize(("stop", "epoch", "position"), [(2, 0, 4), (3, 0, 7), (4, 1, 2)])
def test_lightning_checkpoint_saves_and_restores_the_sampler(tmp_path, stop, epoch, position, recwarn):
    uninterrupted = _fit(7, tmp_path / "full")
    assert _fit(stop, tmp_path / "killed") == uninterrupted[:stop]
    ckpt = tmp_path / "killed" / f"step={stop}.ckpt"
    saved = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert [(s["sampler"]["epoch"], s["sampler"]["position"]) for s in saved] == [(epoch, position)]
    assert _fit(7, tmp_path / "resumed", ckpt_path=ckpt) == uninterrupted[stop:]
    assert not [w for w in recwarn if "not resumable" in str(w.message)]
