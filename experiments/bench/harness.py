"""The benchmark harness: timing (warm-up, interleaved rounds, median/min/max, CUDA sync and peak memory), the
environment record, the command line and the results file. Knows nothing of what is measured (:mod:`.suites`) or
built (:mod:`.models`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
SEED = 0
DESCRIPTION = (
    "Speed benchmark behind `make bench`: what the core pieces cost per call, how SDD's one-pass edit compares "
    "with SDEdit, and what the framework adds to an SDD training step over a bare PyTorch loop."
)


# --- timing -------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summary(times_ms: list[float], warmup: int) -> dict[str, Any]:
    return {
        "median_ms": statistics.median(times_ms),
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "repeats": len(times_ms),
        "warmup": warmup,
    }


def timer(fn: Callable[[], Any]):
    """``torch.utils.benchmark.Timer`` of ``fn()`` on every thread torch uses (its default is one thread), with
    its CUDA synchronisation around each timed block."""
    from torch.utils import benchmark

    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def time_calls(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Warm each function up, then time ``repeats`` rounds with the functions interleaved (so slow drifts of
    the machine hit all of them alike), each call by ``torch.utils.benchmark`` (:func:`timer`); per function:
    median/min/max ms and, on CUDA, the peak memory of its calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    peak: dict[str, int] = dict.fromkeys(fns, 0)
    timers = {name: timer(fn) for name, fn in fns.items()}
    for _ in range(repeats):
        for name in fns:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            times[name].append(timers[name].timeit(1).times[0] * 1e3)
            if device.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
    out = {}
    for name in fns:
        out[name] = summary(times[name], warmup)
        if device.type == "cuda":
            out[name]["peak_cuda_mem_mb"] = round(peak[name] / 2**20, 1)
    return out


class Bench:
    """Collects measurement entries ``{name, size, device, median_ms, repeats, ...}``."""

    def __init__(self, repeats: int, warmup: int):
        self.repeats, self.warmup = repeats, warmup
        self.entries: list[dict[str, Any]] = []

    def measure(
        self,
        size: str,
        device: torch.device,
        fns: dict[str, tuple[Callable[[], Any], dict[str, Any]]],
        repeats: int | None = None,
        warmup: int | None = None,
    ) -> None:
        """``fns``: name → (callable, extra fields of the entry); functions given together are interleaved.
        ``repeats``/``warmup``: this group's own counts (e.g. fewer for minute-long real-size steps on a CPU)."""
        torch.manual_seed(SEED)
        warmup = self.warmup if warmup is None else warmup
        stats = time_calls({k: v[0] for k, v in fns.items()}, device, repeats or self.repeats, warmup)
        for name, (_, extra) in fns.items():
            entry = {"name": name, "size": size, "device": device_name(device), **extra, **stats[name]}
            self.entries.append(entry)
            batch = f" b{extra['batch']}" if "batch" in extra else ""
            print(f"  {name:<40} {size:<5} {entry['median_ms']:>11.2f} ms{batch}", flush=True)

    def entry(self, name: str, size: str, batch: int | None = None) -> dict[str, Any] | None:
        """Entry ``name`` at ``size`` (the first one; with ``batch``, the first at that batch)."""
        for e in self.entries:
            if e["name"] == name and e["size"] == size and (batch is None or e.get("batch") == batch):
                return e
        return None

    def median(self, name: str, size: str, batch: int | None = None, stat: str = "median_ms") -> float | None:
        """The median (``stat="min_ms"``: the minimum) of :meth:`entry` ``name``, in ms; None when not measured."""
        e = self.entry(name, size, batch)
        return e[stat] if e else None

    def add(self, entry: dict[str, Any]) -> None:
        """Record a measurement taken outside :meth:`measure` (e.g. timed by a Lightning callback)."""
        self.entries.append(entry)
        print(f"  {entry['name']:<28} {entry['size']:<5} {entry['median_ms']:>11.2f} ms", flush=True)


# --- the CPU allocator ----------------------------------------------------------------------------------------
def retain_cpu_memory() -> str | None:
    """Make glibc keep freed memory in the process instead of handing it back to the kernel, for real-size training
    steps on the CPU. By default every tensor over 32 MB (a 128-channel 256² fp32 activation of batch ≥ 1) is its own
    ``mmap`` and is unmapped when freed, and the top of the heap is trimmed: every step then page-faults its whole
    working set in again (kernel zeroing, minutes of system time per hundred steps; measured ~1–5 s of a 5–30 s
    ADM-256 step on the 2-core CPU, more for the doubled batch). ``M_MMAP_MAX=0`` serves every size from the heap,
    ``M_TRIM_THRESHOLD=-1`` never trims it: the second step faults nothing. Returns what was set, or None where
    there is no glibc (``mallopt`` absent); the resident size stays at the peak of a step, which training reaches
    anyway. Process-wide and one-way: call it before the measured allocations."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    ok = mallopt(m_mmap_max, 0) and mallopt(m_trim_threshold, -1) and mallopt(m_top_pad, 64 << 20)
    return "retain (glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1, M_TOP_PAD=64 MiB)" if ok else None


# --- environment --------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({_cpu_name()})"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    import diffusers
    import lightning
    import transformers

    env = {
        "timestamp_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "git_commit": _git_commit(),
    }
    if torch.cuda.is_available():
        env.update(
            cuda_device=torch.cuda.get_device_name(0),
            cuda_version=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cuda_device_count=torch.cuda.device_count(),
        )
    return env


# --- command line and results --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench.run",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="bench/results.json", help="JSON file to write (atomically)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement; reports the median")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2, --quick 1)")
    p.add_argument(
        "--sizes",
        choices=("tiny", "real", "all"),
        default="all",
        help="tiny (CPU, always possible), real (needs CUDA), all (tiny + real when CUDA is visible)",
    )
    p.add_argument("--quick", action="store_true", help="1 warm-up call and at most 2 repeats (smoke runs)")
    p.add_argument(
        "--cpu-malloc",
        choices=("retain", "default"),
        default="retain",
        help="--sizes real on the CPU: keep freed memory in the process (retain_cpu_memory; default) or glibc's own",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads for the CPU runs (default 1: tiny ops on a 2-core box thrash with 2)",
    )
    p.add_argument(
        "--suites",
        default="latency,flops,rectifier,sdft,sdd",
        help="--sizes real on the CPU: which real-size suites to run (comma-separated; default all)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    known = ("latency", "flops", "rectifier", "sdft", "sdd")
    args.suites = tuple(s.strip() for s in args.suites.split(",") if s.strip())
    if not set(args.suites) <= set(known):
        p.error(f"--suites: expected names from {','.join(known)}, got {','.join(args.suites)}")
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.quick:
        args.repeats = min(args.repeats, 2)
    return args


def suite_parser(doc: str, batch_help: str) -> argparse.ArgumentParser:
    """The command line of a suite run alone (``python -m experiments.bench.<suite>``): sizes, repeats, batch."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--sizes", choices=("tiny", "real", "all"), default="all")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help=batch_help)
    p.add_argument("--out", default=None, help="also write the results JSON here")
    p.add_argument(
        "--device",
        default=None,
        choices=("cuda", "cpu"),
        help="device of the real sizes (default cuda; cpu: minutes per real-size step); tiny always runs on the CPU",
    )
    p.add_argument(
        "--cpu-malloc",
        choices=("retain", "default"),
        default="retain",
        help="real sizes on the CPU: keep freed memory in the process (retain_cpu_memory) or glibc's default",
    )
    return p


def suite_sizes(choice: str, device: str | None = None) -> list[str]:
    """``tiny`` / ``real`` / ``all`` → the sizes to run. Real sizes run on CUDA, or on the CPU when asked for
    (``device="cpu"``); a one-line exit when they would need CUDA and none is visible."""
    cuda = torch.cuda.is_available()
    if choice == "real" and device != "cpu" and not cuda:
        raise SystemExit("--sizes real needs a CUDA device (none is visible); use --sizes tiny or --device cpu")
    real = device == "cpu" or cuda
    return {"tiny": ["tiny"], "real": ["real"], "all": ["tiny"] + ["real"] * real}[choice]


def real_device(device: str | None) -> torch.device:
    """The device of the real sizes of a suite run alone: ``--device``, default CUDA."""
    return torch.device(device or "cuda")


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'measurement':<28} {'size':<5} {'device':<24} {'median ms':>11} {'min–max ms':>21}")
    for e in results["measurements"]:
        spread = f"{e['min_ms']:.2f}–{e['max_ms']:.2f}"
        print(f"{e['name']:<28} {e['size']:<5} {e['device'][:24]:<24} {e['median_ms']:>11.2f} {spread:>21}")
    for name, per_size in results["ratios"].items():
        for size, value in per_size.items():
            print(f"ratio {name} [{size}]: {value:.2f}")


def write_results(results: dict[str, Any], path: str | os.PathLike) -> None:
    """The results JSON, written atomically (a crash never leaves half a file)."""
    from diffedit_lab.utils.io import atomic_json_dump

    atomic_json_dump(results, path)
