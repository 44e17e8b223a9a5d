"""Speed benchmark behind ``make bench`` (issues #3 and #4): what the core pieces cost per call, how SDD's
one-pass edit compares with SDEdit, and what the framework adds to an SDD training step over a bare PyTorch
loop.

    python -m experiments.bench.run --out bench/results.json           # tiny on CPU (+ real sizes on CUDA)
    python -m experiments.bench.run --sizes tiny --repeats 1 --quick --out /tmp/b.json

Every number is the median of ``--repeats`` timed calls after warm-up calls (``torch.cuda.synchronize`` around
each GPU call). ``tiny`` runs the miniature random models of tests/demo on the CPU; ``real`` (CUDA only)
builds randomly initialised models with the real shapes (SD v1.4 UNet/VAE/text encoder in fp16, StyleGAN2
config-f 1024, the 256-px ddpm-celebahq UNet) — no download, the cost of a network does not depend on its
weights. See ``experiments/bench/README.md`` for what each entry means.

Layout: :mod:`.harness` (timing, environment, command line, results file), :mod:`.models` (what is built),
:mod:`.suites` (the benchmark groups); this module runs them and derives the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from experiments.bench.harness import (
    SEED,
    Bench,
    device_name,
    environment,
    parse_args,
    print_table,
    write_results,
)
from experiments.bench.models import build_generator_and_mapper, build_sd, build_uncond
from experiments.bench.rectifier import bench_rectifier
from experiments.bench.sdft import bench_sdft
from experiments.bench.suites import PROMPT, T_PROBE, bench_core, bench_edit, bench_train, bench_trainer

RATIOS = {  # name -> (numerator entry, denominator entry)
    "sdedit_over_sdd_edit": ("edit.sdedit", "edit.sdd"),
    "sdd_framework_over_bare_step": ("train.sdd_step.framework", "train.sdd_step.bare"),
    "sdd_trainer_over_bare_step": ("train.sdd_step.trainer", "train.sdd_step.bare"),
    "sdft_over_naive_step": ("train.sdft_step", "train.naive_step"),
    "rectifier_grouped_over_plain": ("rectifier.forward.grouped", "rectifier.plain_forward"),
    "rectifier_vmap_over_plain": ("rectifier.forward.vmap", "rectifier.plain_forward"),
    "rectifier_step_over_plain": ("rectifier.step.grouped", "rectifier.plain_forward"),
}


def ratios(bench: Bench, sizes: list[str]) -> dict[str, dict[str, float]]:
    """Per ratio and size: median(numerator) / median(denominator), where both were measured."""
    out: dict[str, dict[str, float]] = {name: {} for name in RATIOS}
    for name, (num, den) in RATIOS.items():
        for size in sizes:
            a, b = bench.median(num, size), bench.median(den, size)
            if a and b:
                out[name][size] = a / b
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=re.escape("You are trying to `self.log()`"))
    # Lightning 2.6 on torch 2.14:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    # real sizes: every suite on CUDA; without a GPU only the per-image edit latency of every method (fp32, CPU)
    cpu_real = args.sizes == "real" and not cuda
    sizes = {"tiny": ["tiny"], "real": ["real"] * cuda, "all": ["tiny"] + ["real"] * cuda}[args.sizes]

    bench = Bench(args.repeats, args.warmup)
    results: dict[str, Any] = {
        "env": environment(),
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sizes": sizes,
            "quick": args.quick,
            "seed": SEED,
            "prompt": PROMPT,
            "t_probe": T_PROBE,
        },
        "skipped": [] if cuda or args.sizes == "tiny" else ["real fp16 suites: no CUDA device visible"],
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffedit_bench_") as tmp:
        for size in sizes:
            device = torch.device("cpu" if size == "tiny" else "cuda")
            print(f"[{size} on {device_name(device)}]", flush=True)
            torch.manual_seed(SEED)
            sd, uncond = build_sd(size, device), build_uncond(size, device)
            gen, mapper = build_generator_and_mapper(size, device)
            bench_core(bench, size, device, sd, uncond)
            del uncond
            bench_edit(bench, size, device, sd, gen, mapper)
            del sd, gen, mapper
            if size == "tiny":
                results["train_check"] = bench_train(bench, device, Path(tmp))
                bench_trainer(bench, device, Path(tmp))
            results.setdefault("sdft", {})[size] = bench_sdft(bench, size, device)
            results.setdefault("rectifier", {})[size] = bench_rectifier(bench, size, device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "real" in sizes or cpu_real:  # edit latency per image of every method at real size, ratios to SDD
            from experiments.bench.latency import measure as measure_latency
            from experiments.bench.latency import print_latency

            device = torch.device("cuda" if cuda else "cpu")
            if not cuda:
                torch.set_num_threads(os.cpu_count() or 1)  # real-size convolutions use every core
            results["latency"] = measure_latency(Bench(min(args.repeats, 3), 1), device)
            print_latency(results["latency"])

    results.update(measurements=bench.entries, ratios=ratios(bench, sizes), total_seconds=time.perf_counter() - t_start)
    results["env"]["torch_num_threads"] = torch.get_num_threads()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(args)
    write_results(results, args.out)
    print_table(results)
    print(f"\nwrote {args.out} ({results['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
