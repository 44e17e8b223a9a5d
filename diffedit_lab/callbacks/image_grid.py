"""Image grids during training: written as PNGs to the run dir and sent to every logger that takes images."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning import Callback

from diffedit_lab.utils.io import save_grid
from diffedit_lab.utils.loggers import log_image_file


class ImageGridLogger(Callback):
    """Every ``every_n_steps`` calls ``pl_module.preview_images()`` → {name: (N,3,H,W) in [-1,1]} and saves
    ``<out_dir>/<name>_step<NNNNNN>.png`` (rows of ``nrow``), and once at the end of training.
    ``every_n_steps=0`` turns the periodic previews off (the final one is still written)."""

    def __init__(self, every_n_steps: int = 200, out_dir: str = "images", nrow: int | None = None):
        if int(every_n_steps) < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.out_dir = Path(out_dir)
        self.nrow = nrow
        self._last = -1

    def _emit(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "preview_images"):
            return
        step = trainer.global_step
        if step == self._last:
            return
        self._last = step
        was_training = pl_module.training
        pl_module.eval()
        try:
            images = pl_module.preview_images()
        finally:
            pl_module.train(was_training)
        for name, batch in images.items():
            nrow = self.nrow or max(1, len(batch) // 2)
            path = save_grid(batch, self.out_dir / f"{name}_step{step:06d}.png", nrow=nrow)
            caption = f"{name} at step {step}, {len(batch)} images in rows of {nrow}"
            log_image_file(trainer.loggers, f"images/{name}", path, step, caption)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._emit(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        with torch.no_grad():
            self._emit(trainer, pl_module)
