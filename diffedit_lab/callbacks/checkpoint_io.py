"""Checkpoints written atomically: a crash mid-save never corrupts ``last.ckpt``."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from diffedit_lab.utils.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, then ``os.replace`` onto the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None):
        # Our checkpoints hold only tensors and plain containers (+ Lightning's own metadata).
        return super().load_checkpoint(
            path, map_location=map_location, weights_only=False if weights_only is None else weights_only
        )
