"""`make gpu-check`: everything a lent GPU should measure, in one command, within about 8 minutes.

1. the real-size benchmark suites (``python -m experiments.bench.run --sizes real``) → ``bench/results-gpu.json``;
2. the paper presets at real shapes (:mod:`experiments.smoke.run` ``--device cuda``: the presets' own batch and
   precision, no CPU batch caps, one process per preset, peak CUDA memory per stage from
   ``torch.cuda.max_memory_allocated`` beside the CPU-derived estimate) → ``bench/results-smoke-gpu.json``, the
   presets whose memory matters most first, until the time budget is spent.

Without a CUDA device it stops at once with one line (exit status 2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# memory-critical first: SDFT's bf16 student + fp16 teacher, the 292.8M-parameter rectifier, SDD's SD teacher
GPU_ORDER = ["sdft_metfaces", "rectifier_celebahq", "sdd_faces", "asyrp_celebahq", "sdedit_512", "ddib_512",
             "sdft_aahq", "rectifier_church", "sdd_cat", "sdd_car", "compare_edit"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.smoke.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole check (default 8 minutes)")
    ap.add_argument("--bench-s", type=float, default=200.0, help="at most this much of it for the bench suites")
    ap.add_argument("--bench-out", default="bench/results-gpu.json")
    ap.add_argument("--smoke-out", default="bench/results-smoke-gpu.json")
    ap.add_argument("--only", default=",".join(GPU_ORDER), help="presets, in this order")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("error: make gpu-check needs a CUDA GPU and torch.cuda.is_available() is False here "
              "(on a CPU machine: make smoke-real, make bench-real)", file=sys.stderr)  # fmt: skip
        return 2
    t0 = time.time()
    py = sys.executable
    bench = [py, "-m", "experiments.bench.run", "--sizes", "real", "--out", args.bench_out]
    print(f"[gpu-check] {' '.join(bench[1:])} (≤ {args.bench_s:.0f} s)", flush=True)
    try:
        rc_bench = subprocess.run(bench, cwd=ROOT, timeout=args.bench_s).returncode
    except subprocess.TimeoutExpired:
        rc_bench = 124
        print(f"[gpu-check] bench suites stopped after {args.bench_s:.0f} s", flush=True)
    left = args.budget_s - (time.time() - t0)
    smoke = [py, "-m", "experiments.smoke.run", "--device", "cuda", "--only", args.only, "--out", args.smoke_out,
             "--budget-s", f"{max(left, 60):.0f}"]  # fmt: skip
    print(f"[gpu-check] {' '.join(smoke[1:])}", flush=True)
    rc_smoke = subprocess.run(smoke, cwd=ROOT).returncode
    print(f"[gpu-check] bench: exit {rc_bench} → {args.bench_out}; smoke: exit {rc_smoke} → {args.smoke_out} "
          f"({time.time() - t0:.0f} s)")  # fmt: skip
    return 0 if rc_bench == 0 and rc_smoke == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
