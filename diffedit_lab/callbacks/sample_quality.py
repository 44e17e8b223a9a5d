"""Sample quality during training through Lightning's validation loop: every N optimiser steps, FID/KID of
generated samples against the target set, logged as ``val/<metric>``, and the best checkpoint kept by Lightning's
``ModelCheckpoint(monitor="val/<metric>", mode="min")`` as ``best.ckpt``.

Generic over methods: the method's ``validation_step`` turns a batch of seeds (``batch["seed"]``) into images
(e.g. DDIM from its EMA model) and returns ``{"metrics": {"fake": images}}``; :class:`SampleQuality` (a
:class:`~diffedit_lab.callbacks.metrics.MetricsCallback`) scores them with ``feed_real(suite, device, rank, world)``
(this rank's share of the reference images). The reference statistics are computed at the first evaluation and
kept for every later one (torchmetrics' ``reset_real_features=False``), so each evaluation costs only the samples.
Seeds are fixed (``seed + i`` for sample i), so successive values compare the model, not the noise; under DDP
Lightning's distributed sampler gives each rank its share of the seeds and the metric states are summed.

The evaluation runs inside ``torch.random.fork_rng`` (and the seeds' loader draws from its own generator): whatever
it draws leaves the training random state untouched, so a resumed run is bit-exact whether or not an evaluation
fell inside it. The history of evaluations is part of the callback's checkpointed state.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.data.latents import SeedDataset
from diffedit_lab.evaluation.suite import MetricSuite


def seeds_loader(first: int, n: int, batch_size: int) -> DataLoader:
    """The validation loader: seeds in order, with a generator of its own (iterating it draws nothing from the
    global random state)."""
    return DataLoader(SeedDataset(first, n), batch_size=batch_size, shuffle=False, generator=torch.Generator())


class WithValidation(LightningDataModule):
    """A training datamodule with another validation loader (e.g. seeds to sample from); training batches, the
    resumable train loader's state and everything else are the wrapped datamodule's."""

    def __init__(self, data: Any, val_loader: Callable[[], DataLoader]) -> None:
        super().__init__()
        self.data, self._val_loader = data, val_loader

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)

    def train_dataloader(self):
        return self.data.train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self._val_loader()


def validation_trainer_kwargs(every_steps: int, accumulate_grad_batches: int = 1) -> dict[str, Any]:
    """Trainer arguments that run the validation loop (all of it) every ``every_steps`` optimiser steps, counted
    across epochs, with no sanity run."""
    return {
        "val_check_interval": int(every_steps) * max(1, int(accumulate_grad_batches)),  # Lightning counts batches
        "check_val_every_n_epoch": None,
        "limit_val_batches": 1.0,
        "num_sanity_val_steps": 0,
    }


def best_checkpoint(dirpath: str | Path, monitor: str) -> ModelCheckpoint:
    """``<dirpath>/best.ckpt``: the full training state of the evaluation with the lowest ``monitor``."""
    return ModelCheckpoint(
        dirpath=str(dirpath),
        filename="best",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )


class SampleQuality(MetricsCallback):
    """Scores what the validation steps return (``val/<metric>``, logged so ``ModelCheckpoint`` can monitor it),
    keeps the reference statistics across evaluations and a checkpointed ``history`` of ``(step, values)``."""

    def __init__(
        self,
        make_suite: Callable[[], MetricSuite],
        feed_real: Callable[[MetricSuite, torch.device, int, int], None],
        monitor: str = "fid",
        prefix: str = "val",
    ) -> None:
        super().__init__(make_suite, prefix)
        self.feed_reference, self.monitor = feed_real, monitor
        self.history: list[tuple[int, dict[str, float]]] = []
        self._real_fed = False
        self._rng: contextlib.AbstractContextManager | None = None

    @property
    def key(self) -> str:
        return f"{self.prefix}/{self.monitor}"

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        device = pl_module.device
        self._rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        self._rng.__enter__()
        self._start(pl_module)  # the fake side only: the reference statistics stay (reset_real_features=False)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        try:
            if not self._real_fed:  # each rank its share of the reference set, once
                self.feed_reference(self.suite, pl_module.device, trainer.global_rank, trainer.world_size)
                self._real_fed = True
            values = self._finish(pl_module)
        finally:
            rng, self._rng = self._rng, None
            if rng is not None:
                rng.__exit__(None, None, None)
        pl_module.log_dict(values, sync_dist=False)  # already reduced across ranks by torchmetrics
        self.history.append((int(trainer.global_step), values))

    # --- checkpointed state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": [[s, dict(v)] for s, v in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [(int(s), dict(v)) for s, v in state_dict.get("history", [])]

    def summary(self) -> dict[str, float]:
        """``<prefix>/<monitor>_best`` and its step (the first evaluation with the lowest value, as
        ``ModelCheckpoint`` keeps it), for the run's metrics.json; nothing when never evaluated."""
        scored = [(v[self.key], s) for s, v in self.history if self.key in v and not math.isnan(v[self.key])]
        if not scored:
            return {}
        best, step = min(scored, key=lambda x: (x[0], x[1]))
        return {f"{self.key}_best": best, f"{self.key}_best_step": float(step)}
