"""Seeded construction that leaves the caller's random streams untouched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with ``torch.manual_seed(seed)`` and restore the global CPU RNG (and that of a CUDA
    ``device``) afterwards, so building a test model never shifts the random numbers drawn after it. With a
    ``device``, tensors created in the block without an explicit device are created there (fast random init of
    large models directly on the GPU)."""
    dev = torch.device(device) if device is not None else None
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev and dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        with dev if dev is not None else contextlib.nullcontext():
            yield
