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
import functools
import gc
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from experiments.bench.flops import measure as measure_flops
from experiments.bench.harness import (
    SEED,
    Bench,
    device_name,
    environment,
    parse_args,
    print_table,
    retain_cpu_memory,
    write_results,
)
from experiments.bench.models import build_generator_and_mapper, build_sd, build_uncond
from experiments.bench.pipelines import bench_pipelines
from experiments.bench.rectifier import bench_rectifier
from experiments.bench.sdft import bench_sdft
from experiments.bench.suites import PROMPT, T_PROBE, bench_core, bench_edit, bench_train, bench_trainer

RATIOS = {  # name -> (numerator entry, denominator entry)
    "sdedit_over_sdd_edit": ("edit.sdedit", "edit.sdd"),
    "sdd_framework_over_bare_step": ("train.sdd_step.framework", "train.sdd_step.bare"),
    "sdd_trainer_over_bare_step": ("train.sdd_step.trainer", "train.sdd_step.bare"),
    "sdft_joint_over_naive_step": ("train.sdft_step.joint", "train.naive_step"),
    "sdft_separate_over_naive_step": ("train.sdft_step.separate", "train.naive_step"),
    "rectifier_grouped_over_plain": ("rectifier.forward.grouped", "rectifier.plain_forward"),
    "rectifier_vmap_over_plain": ("rectifier.forward.vmap", "rectifier.plain_forward"),
    "rectifier_step_over_plain": ("rectifier.step.grouped", "rectifier.plain_forward"),
}
DEFAULT_SDFT = "sdft_over_naive_step"  # the SDFT step in the default `loss.student_batching` (conf/method/sdft.yaml)
CPU_REAL_SUITES = ("latency", "flops", "rectifier", "sdft", "sdd")  # --suites: which of them (default all)
CPU_REAL = dict(  # real sizes on the CPU (`--sizes real` without a GPU): batches and timed calls per suite
    sdft_batches=(1, 2),
    sdft_repeats=(5, 3),
    rectifier_batch=2,
    rectifier_repeats=3,
    sdd_batch=1,
    sdd_repeats=3,
    warmup=1,
)


def ratios(bench: Bench, sizes: list[str], stat: str = "median_ms") -> dict[str, dict[str, float]]:
    """Per ratio and size: median (``stat="min_ms"``: minimum) of the numerator over that of the denominator at
    the same batch, where both were measured. Key: the size; ``<size>/b<batch>`` for a further batch of it."""
    from diffedit_lab.methods.sdft.config import LossConfig
    from diffedit_lab.utils.config import method_settings

    default = method_settings(LossConfig, "sdft", "loss").student_batching
    out: dict[str, dict[str, float]] = {name: {} for name in (*RATIOS, DEFAULT_SDFT)}
    for name, (num, den) in RATIOS.items():
        for size in sizes:
            batches = list(
                dict.fromkeys(e.get("batch") for e in bench.entries if (e["name"], e["size"]) == (num, size))
            )
            for i, batch in enumerate(batches):
                a, b = bench.median(num, size, batch, stat), bench.median(den, size, batch, stat)
                if a and b:
                    key = size if i == 0 else f"{size}/b{batch}"
                    out[name][key] = a / b
                    if name == f"sdft_{default}_over_naive_step":
                        out[DEFAULT_SDFT][key] = a / b
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=re.escape("You are trying to `self.log()`"))
    # Lightning 2.6 on torch 2.14:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    # real sizes: every suite on CUDA; without a GPU (`--sizes real`) the per-image edit latency of every method,
    # the FLOP throughput of each network, and the step ratios (SDFT, Rectifier, SDD) at reduced batch (fp32, CPU)
    cpu_real = args.sizes == "real" and not cuda
    sizes = {"tiny": ["tiny"], "real": ["real"] * cuda, "all": ["tiny"] + ["real"] * cuda}[args.sizes]
    malloc = None
    if cpu_real and args.cpu_malloc == "retain":
        malloc = retain_cpu_memory()  # before anything large is allocated (harness.retain_cpu_memory)

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
    if cpu_real:
        results["settings"]["cpu_real"] = dict(CPU_REAL, cpu_malloc=malloc or "default", suites=list(args.suites))
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
                results["pipelines"] = bench_pipelines(bench, Path(tmp) / "pipelines")
            else:
                results["train_check_real"] = bench_train(bench, device, Path(tmp), "real")
            results.setdefault("sdft", {})[size] = bench_sdft(bench, size, device)
            results.setdefault("rectifier", {})[size] = bench_rectifier(bench, size, device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            flops_time = {"tiny": 0.05, "real": 1.0}[size]  # seconds each path is timed for at least
            results.setdefault("flops", {})[size] = measure_flops(size, device, args.repeats, flops_time)
        if "real" in sizes or (cpu_real and "latency" in args.suites):  # edit latency per image, ratios to SDD
            from experiments.bench.latency import measure as measure_latency
            from experiments.bench.latency import print_latency

            device = torch.device("cuda" if cuda else "cpu")
            if not cuda:
                torch.set_num_threads(os.cpu_count() or 1)  # real-size convolutions use every core
            results["latency"] = measure_latency(Bench(min(args.repeats, 3), 1), device)
            print_latency(results["latency"])
        if cpu_real:
            cpu_real_suites(bench, results, Path(tmp), min(args.repeats, 3), args.suites)

    sizes_measured = sizes + ["real"] * cpu_real
    results.update(
        measurements=bench.entries,
        ratios=ratios(bench, sizes_measured),
        ratios_min=ratios(bench, sizes_measured, "min_ms"),  # the least contended call of each: a shared machine
        total_seconds=time.perf_counter() - t_start,
    )
    results["env"]["torch_num_threads"] = torch.get_num_threads()
    return results


def cpu_real_suites(
    bench: Bench, results: dict[str, Any], work_dir: Path, repeats: int, suites: tuple[str, ...] = CPU_REAL_SUITES
) -> None:
    """The real-size suites without a GPU, the same code as on CUDA at reduced batch (``CPU_REAL``), fp32, every
    core: FLOP throughput, the Rectifier's forward (batch 2, grouped), the SDFT step in both batching modes
    (batch 1 with its parts, batch 2), the SDD training step through the framework vs bare (batch 1)."""
    c, cpu = CPU_REAL, torch.device("cpu")
    print(f"[real on cpu: {', '.join(s for s in suites if s != 'latency')}]", flush=True)

    def suite(name: str, fn) -> Any:  # one failing suite (e.g. out of memory) leaves the others' numbers
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 -- recorded, and main() exits non-zero after writing the file
            traceback.print_exc()
            results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            return None
        finally:
            gc.collect()

    if "flops" in suites:
        results.setdefault("flops", {})["real"] = suite("flops", lambda: measure_flops("real", cpu, repeats=repeats))
    if "rectifier" in suites:
        results.setdefault("rectifier", {})["real"] = suite("rectifier", lambda: bench_rectifier(
            bench, "real", cpu, c["rectifier_batch"], ("grouped",), c["rectifier_repeats"], c["warmup"]))  # fmt: skip
    if "sdft" in suites:
        for i, (b, r) in enumerate(zip(c["sdft_batches"], c["sdft_repeats"], strict=True)):  # parts at the first
            sdft = functools.partial(bench_sdft, bench, "real", cpu, b, parts=i == 0, repeats=r, warmup=c["warmup"])
            results.setdefault("sdft", {})["real" if i == 0 else f"real/b{b}"] = suite(f"sdft_b{b}", sdft)
    if "sdd" in suites:
        results["train_check_real"] = suite("sdd", lambda: bench_train(
            bench, cpu, work_dir, "real", c["sdd_batch"], repeats=c["sdd_repeats"], warmup=c["warmup"]))  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(args)
    write_results(results, args.out)
    print_table(results)
    print(f"\nwrote {args.out} ({results['total_seconds']:.0f} s)")
    if results.get("errors"):
        raise SystemExit(f"suites failed (their numbers are missing from {args.out}): {results['errors']}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
