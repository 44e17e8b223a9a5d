"""A minimal second method, living entirely outside the package: the proof that a new method needs only its
module and its config folder (here ``tests/toy/module.py`` + ``tests/toy/conf/method/toy*``, put on Hydra's search
path) — no change to ``run.py``, the trainer/callback/debug configs or the shared test fixtures.

It has two training stages with their own optimisers (like Rectifier's reconstruction then editing). Its edit is
``edit_batch`` alone: the ``edit`` and ``eval`` stages (writer, grid, latency, metric suite), the Python pipeline
(``load_pipeline(run_dir)``), its trained-weights lookup and loading come from the base.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.config import EditEvalConfig, EditImagesConfig, TrainStageConfig
from diffedit_lab.methods.stage import Stage
from diffedit_lab.utils.schema import bounds, target


@dataclass
class ToyConfig:
    """Types and bounds only: the defaults live in ``tests/toy/conf/method/toy.yaml``."""

    target: str = target()
    name: str
    shift: TrainStageConfig  # learn an offset (Adam)
    scale: TrainStageConfig  # then a gain (SGD)
    goal: float = field(metadata=bounds(ge=-1, le=1))
    edit: EditImagesConfig
    eval: EditEvalConfig


class ToyMethod(EditingMethod):
    Config = ToyConfig
    STAGES = (
        Stage("shift", train=True),
        Stage("scale", train=True),
        Stage("edit", uses="scale"),
        Stage("eval", uses="scale"),
    )
    EDIT_STAGE = "edit"

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__(cfg)
        self.offset = torch.nn.Parameter(torch.zeros(()))
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.optimizers_used: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x + self.offset

    def stage_shift(self, ctx) -> None:
        self.run_training(ctx, self.cfg.shift)

    def stage_scale(self, ctx) -> None:
        self.run_training(ctx, self.cfg.scale)
        self.mark_trained("scale")

    def configure_optimizers(self):
        if self.stage.name == "shift":
            opt = torch.optim.Adam([self.offset], lr=0.1)
        else:
            opt = torch.optim.SGD([self.gain], lr=0.01)
        self.optimizers_used.append(type(opt).__name__)
        return opt

    def training_step(self, batch, batch_idx):
        x = batch["image"]
        return ((self(x) - (x + self.cfg.goal)) ** 2).mean()

    @torch.no_grad()
    def edit_batch(self, batch, generator=None) -> dict[str, torch.Tensor]:
        x = batch["image"].to(self.device).float()
        return {"source": x, "edited": self(x).clamp(-1, 1)}

    def edit_metrics(self) -> list[str]:
        return ["l1"]
