"""Writes what an inference stage's predict steps return: images as PNGs, tensors as .pt, and a before/after grid.

A predict step returns ``{"names": [B names], "images": {key: (B,3,H,W) in [-1,1]}, "tensors": {key: tensor}}``
(optionally ``"name_format"`` and ``"grid": (before, after)``); every image lands in ``<out_dir>/<name_format>``
(default ``{key}/{name}.png``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter

from diffedit_lab.utils.io import save_images
from diffedit_lab.utils.loggers import log_image_file, log_rows


def before_after_grid(before: torch.Tensor, after: torch.Tensor, columns: int) -> torch.Tensor:
    """Rows of at most ``columns`` originals, each followed by the row of their edits: as wide as the pairs it
    holds (4 pairs make 4 columns, not 8 with 4 black), a short last row padded white like the grid's gaps."""
    from torchvision.utils import make_grid

    columns = max(1, min(int(columns), len(before)))
    rows = []
    for i in range(0, len(before), columns):
        rows += [before[i : i + columns], after[i : i + columns]]
    tiles = torch.cat([F.pad(r, (0, 0, 0, 0, 0, 0, 0, columns - len(r)), value=1) for r in rows])
    return make_grid(tiles, nrow=columns, padding=2, pad_value=1.0)


class ImageWriter(BasePredictionWriter):
    """Lightning's prediction writer (``write_interval="batch"``) that saves every predicted image; keeps up to
    ``grid_max`` (``grid_keys[0]``, ``grid_keys[1]``) pairs for ``<out_dir>/grid.png`` (written, and sent to the
    loggers as ``log_key``, at the end of each predict loop)."""

    def __init__(
        self,
        out_dir: str | Path,
        name_format: str = "{key}/{name}.png",
        grid_keys: tuple[str, str] | None = None,
        grid_columns: int = 8,
        grid_max: int = 32,
        log_key: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.name_format = name_format
        self.grid_keys = grid_keys
        self.grid_columns = grid_columns
        self.grid_max = grid_max
        self.log_key = log_key
        self.count = 0
        self._grid: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._names: list[str] = []
        self.rows: list[dict] = []  # one per image: its files and its own scores (a table on the dashboards)

    def write_on_batch_end(
        self, trainer, pl_module, outputs, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not outputs:
            return
        names = outputs["names"]
        fmt = outputs.get("name_format", self.name_format)
        for key, images in outputs.get("images", {}).items():
            save_images(images, [self.out_dir / fmt.format(key=key, name=n) for n in names])
        for key, tensor in outputs.get("tensors", {}).items():
            path = self.out_dir / f"{key}_{trainer.global_rank}_{batch_idx:03d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(tensor.detach().cpu(), path)
        self.count += len(names)
        if self.grid_keys is not None and outputs.get("images"):
            self.rows += image_rows(outputs, names, lambda key, n: self.out_dir / fmt.format(key=key, name=n))
        if self.grid_keys is not None:
            room = self.grid_max - sum(len(b) for b in self._grid[0])
            if room > 0:  # keep only what the grid shows: a full test split at 1024 px would not fit in memory
                pair = outputs.get("grid") or tuple(outputs["images"][k] for k in self.grid_keys)
                a, b = (x[:room].detach().float().cpu() for x in pair)
                self._grid[0].append(a)
                self._grid[1].append(b)
                self._names += list(names[: len(a)])

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.grid_keys is None or not self._grid[0] or not trainer.is_global_zero:
            return
        grid = before_after_grid(torch.cat(self._grid[0]), torch.cat(self._grid[1]), self.grid_columns)
        path = self.out_dir / "grid.png"
        save_images(grid[None], [path])
        if self.log_key:
            shown = f"{self._names[0]}…{self._names[-1]}" if len(self._names) > 1 else "".join(self._names)
            caption = f"images {shown}; odd rows {self.grid_keys[0]}, even rows {self.grid_keys[1]}"
            log_image_file(trainer.loggers, self.log_key, path, trainer.global_step, caption)
            log_rows(trainer.loggers, self.log_key.rsplit("/", 1)[0] + "/per_image", self.rows)


def image_rows(outputs: dict, names: list[str], path_of) -> list[dict]:
    """Rows of a batch: the image id, the source and result files, the result's own scores against its source
    (L1, PSNR; the step's per-image scalars such as latency)."""
    from diffedit_lab.callbacks.metrics import per_image_scores

    images = outputs["images"]
    keys = list(images)
    result = next((k for k in ("edited", "translated") if k in images), keys[-1])
    pair = outputs.get("grid") or (images[keys[0]], images[result])
    scores = per_image_scores(pair[1], pair[0], (outputs.get("metrics") or {}).get("scalars", {}))
    files = [{"image": n, "source": path_of(keys[0], n), "edited": path_of(result, n)} for n in names]
    return [{**f, **{k: v[i] for k, v in scores.items()}} for i, f in enumerate(files)]
