"""Checkpoints written atomically: a crash mid-save never corrupts ``last.ckpt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from diffedit_lab.utils.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, then ``os.replace`` onto the target. Loading is Lightning's
    (``weights_only`` where its version defaults to it: our checkpoints hold only tensors and plain containers)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint of a stage folder (``last.ckpt`` or a periodic ``step_*.ckpt``), or None.

    A run killed between Lightning's two writes of one save (the periodic file, then ``last.ckpt``) has its newest
    state only in the periodic file; files are written atomically, so the newest one is always whole.
    """
    folder = Path(folder)
    files = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder.is_dir() else []
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"))
