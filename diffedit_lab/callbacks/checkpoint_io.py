"""Checkpoints written atomically: a crash mid-save never corrupts ``last.ckpt``."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from diffedit_lab.utils.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, then ``os.replace`` onto the target. Loading is Lightning's
    (``weights_only`` where its version defaults to it: our checkpoints hold only tensors and plain containers)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)
