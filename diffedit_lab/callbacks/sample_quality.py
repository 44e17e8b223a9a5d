"""Sample quality during training: every N steps, FID/KID of generated samples against the target set, and the
best checkpoint kept by the monitored metric.

Generic over methods: the method passes ``generate(seeds) -> images in [-1, 1]`` (e.g. DDIM from its EMA model)
and ``feed_real(suite, device, rank, world)`` (this rank's share of the reference images). The suite's reference
statistics are computed at the first evaluation and kept for every later one (torchmetrics'
``reset_real_features=False``), so each evaluation costs only the samples. Seeds are fixed (``seed + i`` for
sample i), so successive values compare the model, not the noise; under DDP each rank draws its share of the seeds
and the metric states are summed across ranks.

The evaluation runs inside ``torch.random.fork_rng``: whatever the metrics draw (KID's subsets) leaves the training
random state untouched, so a resumed run is bit-exact whether or not an evaluation fell inside it. The best value and
its step are part of the callback's checkpointed state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from lightning import Callback

from diffedit_lab.evaluation.suite import MetricSuite

log = logging.getLogger(__name__)


class SampleQualityMonitor(Callback):
    """``every`` steps: ``num_samples`` samples → ``suite`` metrics logged as ``<prefix>/<metric>``; when
    ``monitor`` improves (lower is better), the full training state is saved as ``<checkpoint_dir>/best.ckpt``."""

    def __init__(
        self,
        make_suite: Callable[[], MetricSuite],
        generate: Callable[[list[int]], torch.Tensor],
        feed_real: Callable[[MetricSuite, torch.device, int, int], None],
        every: int,
        num_samples: int,
        batch_size: int,
        checkpoint_dir: str | Path | None,
        seed: int = 0,
        monitor: str = "fid",
        prefix: str = "val",
    ) -> None:
        self.make_suite, self.generate, self.feed_real = make_suite, generate, feed_real
        self.every, self.num_samples, self.batch_size = int(every), int(num_samples), int(batch_size)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.seed, self.monitor, self.prefix = int(seed), monitor, prefix
        self.suite: MetricSuite | None = None
        self._real_fed = False
        self.best: float = math.inf
        self.best_step: int = -1
        self.history: list[tuple[int, dict[str, float]]] = []

    @property
    def best_path(self) -> Path | None:
        return self.checkpoint_dir / "best.ckpt" if self.checkpoint_dir else None

    def seeds_for_rank(self, rank: int, world: int) -> list[int]:
        return [self.seed + i for i in range(rank, self.num_samples, world)]

    @torch.no_grad()
    def evaluate(self, trainer, pl_module) -> dict[str, float]:
        """Generate this rank's samples and compute the metrics (states synced across ranks by torchmetrics)."""
        device = pl_module.device
        if self.suite is None:
            self.suite = self.make_suite()
        self.suite.to(device)
        self.suite.reset()  # fake side only: the reference statistics stay
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                if not self._real_fed:  # each rank its share of the reference set
                    self.feed_real(self.suite, device, trainer.global_rank, trainer.world_size)
                    self._real_fed = True
                seeds = self.seeds_for_rank(trainer.global_rank, trainer.world_size)
                for i in range(0, len(seeds), self.batch_size):
                    self.suite.update_unpaired_fake(self.generate(seeds[i : i + self.batch_size]).float())
                values = self.suite.compute()
        finally:
            pl_module.train(was_training)
        return {f"{self.prefix}/{k}": float(v) for k, v in values.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every <= 0 or step == 0 or step % self.every:
            return
        if self.history and self.history[-1][0] == step:
            return
        values = self.evaluate(trainer, pl_module)
        self.history.append((step, values))
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
        key = f"{self.prefix}/{self.monitor}"
        value = values.get(key)
        if value is None:
            log.warning("sample-quality monitor: %s not computed at step %d (metric skipped?)", key, step)
            return
        log.info("step %d: %s", step, {k: round(v, 5) for k, v in values.items()})
        if value < self.best:
            self.best, self.best_step = float(value), int(step)
            trainer.callback_metrics[f"{key}_best"] = torch.tensor(self.best)
            if self.best_path is not None:
                trainer.save_checkpoint(self.best_path)  # atomic (the trainer's checkpoint IO); all ranks call it

    # --- checkpointed state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "history": [[s, dict(v)] for s, v in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = float(state_dict.get("best", math.inf))
        self.best_step = int(state_dict.get("best_step", -1))
        self.history = [(int(s), dict(v)) for s, v in state_dict.get("history", [])]

    def summary(self) -> dict[str, float]:
        """``<prefix>/<monitor>_best`` and its step, for the run's metrics.json (nothing when never evaluated)."""
        if self.best_step < 0:
            return {}
        key = f"{self.prefix}/{self.monitor}"
        return {f"{key}_best": self.best, f"{key}_best_step": float(self.best_step)}
