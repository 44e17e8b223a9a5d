"""What a smoke stage process measures about itself: peak RSS per stage (a sampling thread, plus the kernel's
``ru_maxrss``), peak CUDA memory per stage, and the parameters a method holds (trainable / frozen)."""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

import torch
from torch import nn


def ru_maxrss_mb() -> float:
    """The kernel's peak resident set of this process so far (Linux: kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RSSSampler:
    """Peak resident set of this process within a window (``reset``/``peak_mb``), sampled every ``interval`` s;
    the kernel's ``ru_maxrss`` (monotone, whole process) is the fallback when psutil is missing."""

    def __init__(self, interval: float = 0.1) -> None:
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:  # pragma: no cover - psutil comes with the pinned stack
            self._proc = None
        self.interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if self._proc is not None:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        if self._proc is not None:
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def reset(self) -> None:
        self._peak = 0
        self.sample()

    def peak_mb(self) -> float:
        if self._proc is None:
            return ru_maxrss_mb()
        self.sample()
        return self._peak / 2**20

    def stop(self) -> None:
        self._stop.set()


def _modules_of(obj: Any) -> list[nn.Module]:
    """The networks a method holds: itself (registered children), its lazily built frozen components
    (``_frozen``), and modules kept in plain dicts (SDFT's per-prompt Asyrp editors)."""
    out: list[nn.Module] = []
    if isinstance(obj, nn.Module):
        out.append(obj)
    for value in (getattr(obj, "_frozen", None) or {}).values():
        if isinstance(value, nn.Module):
            out.append(value)
    for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
        if isinstance(value, dict):
            out += [v for v in value.values() if isinstance(v, nn.Module)]
    return out


def count_parameters(method: Any) -> dict[str, int] | None:
    """Trainable (``requires_grad``) and frozen parameters of everything ``method`` holds, each tensor once;
    None for a task that holds no network (a comparison: its entries are runs of their own)."""
    modules = _modules_of(method)
    if not modules:
        return None
    seen: set[int] = set()
    trainable = frozen = 0
    for module in modules:
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
    return {"trainable": trainable, "frozen": frozen}


def cuda_peak_mb(reset: bool = False) -> float | None:
    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**20
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak
