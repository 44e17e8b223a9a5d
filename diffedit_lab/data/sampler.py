"""Seeded, resumable shuffling for training dataloaders: a run resumed from a checkpoint sees the same batches.

Lightning saves a train dataloader's state in its checkpoints (``loops.fit_loop.state_dict.combined_loader``)
and restores it on ``trainer.fit(ckpt_path=...)`` when the *dataloader object* has ``state_dict()`` and
``load_state_dict()`` (``CombinedLoader._state_dicts``; a plain ``DataLoader`` has neither, so a mid-epoch resume
would restart the epoch with a new order). Two pieces make that work:

* :class:`ResumableRandomSampler` — the order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone (no
  global RNG), so it can be recomputed after a restart; ``position`` says how many of this rank's samples of the
  epoch were already used. Under DDP it shards like ``DistributedSampler`` (it is one, so Lightning keeps it as
  is instead of wrapping it). With ``flips=True`` it also draws one horizontal-flip bit per sample from the same
  generator and yields ``(index, flip)`` pairs, so augmentation is resumable too.
* :class:`ResumableDataLoader` — counts the batches it has *handed out* (worker prefetching pulls indices
  ahead of that) and reports ``{"epoch", "position"}`` of the consumed part as its state.

Epochs: Lightning calls ``set_epoch(e)`` at the start of every epoch (changing the epoch restarts at position 0;
calling it with the current epoch keeps a restored position). Outside Lightning, a pass that ran to the end
moves on to the next epoch by itself, so repeated ``for batch in loader`` loops see fresh orders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)

STATE_VERSION = 1


def _epoch_seed(seed: int, epoch: int) -> int:
    """One generator seed per (seed, epoch); unlike ``seed + epoch`` it does not repeat across seeds."""
    return (int(seed) * 0x9E3779B97F4A7C15 + int(epoch)) % (2**63)


def _distributed() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableRandomSampler(DistributedSampler):
    """Shuffled indices of ``range(n)``: the order of epoch ``e`` depends only on ``(seed, e)``.

    ``num_replicas``/``rank`` default to the initialised process group (else 1/0); each rank takes every
    ``num_replicas``-th index of the epoch's permutation, padded by repetition to equal lengths, exactly like
    ``DistributedSampler(shuffle=True, drop_last=False)``. State: ``epoch`` and ``position`` (samples of this rank
    already consumed in that epoch); see :meth:`state_dict`.
    """

    def __init__(
        self, n: int, seed: int = 0, *, num_replicas: int | None = None, rank: int | None = None, flips: bool = False
    ) -> None:
        world, my_rank = _distributed()
        super().__init__(
            range(int(n)),
            num_replicas=world if num_replicas is None else num_replicas,
            rank=my_rank if rank is None else rank,
            shuffle=True,
            seed=int(seed),
            drop_last=False,
        )
        # Follow the process group when not given explicitly: a loader built before DDP started (e.g. passed to
        # trainer.fit directly) still shards once the group exists.
        self._follow_group = num_replicas is None and rank is None
        self.n = int(n)
        self.flips = bool(flips)
        self.position = 0
        self.pass_start = (0, 0)  # (epoch, position) the latest pass started from

    def _sync_group(self) -> None:
        if not self._follow_group:
            return
        world, rank = _distributed()
        if (world, rank) != (self.num_replicas, self.rank):
            self.num_replicas, self.rank = world, rank
            self.num_samples = math.ceil(self.n / world)
            self.total_size = self.num_samples * world

    # ------------------------------------------------------------------------------------------ order
    def epoch_order(self, epoch: int) -> list[int] | list[tuple[int, bool]]:
        """This rank's samples of ``epoch`` in order: indices, or ``(index, flip)`` pairs with ``flips``."""
        self._sync_group()
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(self.n, generator=gen)
        if self.n and self.total_size > self.n:  # pad like DistributedSampler so every rank gets num_samples
            order = order.repeat(math.ceil(self.total_size / self.n))[: self.total_size]
        if not self.flips:
            return order[self.rank :: self.num_replicas].tolist()
        flip = torch.randint(0, 2, (len(order),), generator=gen).bool()
        pairs = list(zip(order.tolist(), flip.tolist(), strict=True))
        return pairs[self.rank :: self.num_replicas]

    def _start(self) -> tuple[int, int]:
        """(epoch, position) the next pass starts from: a finished epoch moves on to the next one."""
        self._sync_group()
        if self.num_samples and self.position >= self.num_samples:
            return self.epoch + 1, 0
        return self.epoch, self.position

    def __iter__(self) -> Iterator[Any]:
        self.epoch, self.position = self._start()
        self.pass_start = (self.epoch, self.position)
        return self._walk(self.epoch_order(self.epoch), self.position)

    def _walk(self, order: list, start: int) -> Iterator[Any]:
        for i in range(start, len(order)):
            self.position = i + 1  # what was pulled; ResumableDataLoader tracks what was consumed
            yield order[i]

    def __len__(self) -> int:
        self._sync_group()
        return self.num_samples

    # ------------------------------------------------------------------------------------------ state
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` at its beginning; the current epoch keeps its position (a restored one included)."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        self._sync_group()
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "n": self.n,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sync_group()
        self.epoch = int(state["epoch"])
        position = int(state["position"])
        same = (state.get("seed", self.seed), state.get("n", self.n)) == (self.seed, self.n)
        if not same or state.get("num_replicas", self.num_replicas) != self.num_replicas:
            log.warning(
                "resumed sampler state was saved for n=%s, seed=%s, %s replica(s); now n=%d, seed=%d, %d: "
                "epoch %d restarts from its beginning",
                state.get("n"),
                state.get("seed"),
                state.get("num_replicas"),
                self.n,
                self.seed,
                self.num_replicas,
                self.epoch,
            )
            position = 0
        self.position = min(max(position, 0), self.num_samples)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose ``state_dict`` is the epoch and consumed position of its resumable sampler.

    Any ``DataLoader`` arguments work; with a sampler other than :class:`ResumableRandomSampler` (e.g. one
    Lightning substituted for ``overfit_batches``) the state is empty and loading it does nothing.
    """

    _consumed: dict[str, int] | None = None

    def _resumable(self) -> ResumableRandomSampler | None:
        return self.sampler if isinstance(self.sampler, ResumableRandomSampler) else None

    def __iter__(self):
        sampler = self._resumable()
        if sampler is None:
            return super().__iter__()
        if self._consumed is not None and self._consumed["epoch"] == sampler.epoch:
            sampler.position = self._consumed["position"]  # indices workers pulled but nobody used come again
        epoch, position = sampler._start()  # where this pass will start (the sampler may run lazily)
        self._consumed = {"epoch": epoch, "position": position}
        return self._count(super().__iter__(), sampler)

    def _count(self, iterator, sampler: ResumableRandomSampler):
        size, total = int(self.batch_size or 1), sampler.num_samples
        epoch, position = sampler.pass_start
        for batches, batch in enumerate(iterator):
            if batches == 0:  # the sampler has started this pass by now (lazily, or when workers prefetched)
                epoch, position = sampler.pass_start
            position = min(position + size, total)
            if self.drop_last and total - position < size:
                position = total  # the remainder is dropped: the epoch is used up
            self._consumed = {"epoch": epoch, "position": position}
            if position == total and sampler.epoch == epoch:
                sampler.position = total  # the next pass starts the next epoch even if this one is not drained
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler = self._resumable()
        if sampler is None:
            return {}
        state = sampler.state_dict()
        if self._consumed is not None:
            state.update(self._consumed)
        return {"sampler": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self._resumable()
        if sampler is not None and state.get("sampler"):
            sampler.load_state_dict(state["sampler"])
            self._consumed = None


def resumable_train_loader(
    dataset,
    batch_size: int,
    seed: int,
    *,
    drop_last: bool = True,
    flips: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> ResumableDataLoader:
    """The train loader every datamodule uses: seeded resumable shuffling, optional per-sample flip bits."""
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ResumableRandomSampler(len(dataset), seed, flips=flips),
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
