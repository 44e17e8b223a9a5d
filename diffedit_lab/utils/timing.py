"""Wall-clock timing of device work: the latency columns every method reports (``latency_ms_per_image``)."""

from __future__ import annotations

import time

import torch


class Stopwatch:
    """``with Stopwatch(device) as sw: …`` then ``sw.ms``: milliseconds of the block, with the CUDA queue drained
    before and after (asynchronous kernels would otherwise be timed where they are waited for, not where they run)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.ms = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.ms = 1000.0 * (time.perf_counter() - self._start)
