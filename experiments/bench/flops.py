"""FLOP throughput of each real-size network path against the machine's practical peak (issue #16): how much of
what the cores can do each network actually gets.

Per path, the FLOPs of one call are counted by ``torch.utils.flop_counter.FlopCounterMode`` (multiply-adds × 2;
convolutions, matmuls, attention) and the call is timed by ``torch.utils.benchmark.Timer`` (after one warm-up call;
the median over ``repeats`` rounds, all of torch's threads); GFLOP/s = GFLOP / median s. The reference is a large
square matmul (``MATMUL_N`` = 4096, 2·n³ FLOPs) in the same dtype on the same cores — the practical peak of the
BLAS — timed in alternation with each path, round by round (so that other jobs on a shared machine load both
alike); ``of_matmul_peak`` is each path's share of it. All under ``torch.no_grad``:

* ``sd_unet``: the SD v1.4 UNet, batch 1, 64×64 latents, 77 text tokens (one conditional ε);
* ``stylegan2_1024``: StyleGAN2 config-f 1024 ``synthesis`` of one W+ code;
* ``adm_256``: the light ADM-FFHQ-256 U-Net of SDFT (learned σ), batch 1;
* ``ddpm_celebahq_256``: the ddpm-celebahq-256 U-Net, batch 2 (the Rectifier's base);
* ``rectified_unet``: the Rectifier's forward (hypernetwork + θ·(1+Δ) + the U-Net with per-sample kernels,
  ``grouped``), batch 2 — as ``rectifier.forward.grouped``.

``real``: fp32 on the CPU, fp16 on CUDA (the Rectifier in fp32 everywhere: its method admits nothing else).
``tiny``: the miniature models of the tests (a smoke run). ``python -m experiments.bench.flops [--sizes tiny|real]
[--device cpu|cuda]`` runs it alone.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

from experiments.bench.harness import SEED, real_device, suite_parser, suite_sizes, timer

MATMUL_N = {"tiny": 512, "real": 4096}


def count_gflops(fn: Callable[[], Any]) -> float:
    """GFLOPs of one call of ``fn`` (no grad), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() / 1e9


def time_interleaved(fn: Callable[[], Any], ref: Callable[[], Any], repeats: int, min_run_time: float):
    """Median seconds per call of ``fn`` and of the reference ``ref``, by ``torch.utils.benchmark``, timed in
    alternation (one warm-up call each, then ``repeats`` rounds of ``ref`` and ``fn`` blocks, each block at least
    ``min_run_time`` long): the peak a path is compared with is measured under the same load of the machine, so the
    share of the peak survives other jobs on the same cores. Returns (fn s, ref s, fn calls timed)."""
    import time

    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    ref()
    t_fn, t_ref = timer(fn), timer(ref)
    n_fn = max(1, int(min_run_time / max(first, 1e-6)))
    ms = [], []
    for _ in range(repeats):
        ms[1].append(t_ref.blocked_autorange(min_run_time=min_run_time))
        ms[0].append(t_fn.timeit(n_fn))
    fn_m, ref_m = (benchmark_merge(m) for m in ms)
    return fn_m.median, ref_m.median, n_fn * repeats


def benchmark_merge(measurements: list):
    from torch.utils import benchmark

    (merged,) = benchmark.Measurement.merge(measurements)
    return merged


def _sd_unet(size: str, device: torch.device, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    from diffedit_lab.testing._seed import seeded
    from diffedit_lab.testing.priors import tiny_sd_configs
    from experiments.bench.models import SD14_UNET

    cfg = SD14_UNET if size == "real" else tiny_sd_configs(32)["unet"]
    with seeded(SEED, device):
        unet = UNet2DConditionModel(**cfg).to(device, dtype).eval()
    lat, ctx = cfg["sample_size"], cfg["cross_attention_dim"]
    z = torch.randn(1, cfg["in_channels"], lat, lat, device=device, dtype=dtype)
    text = torch.randn(1, 77, ctx, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    return unet, lambda: unet(z, t, encoder_hidden_states=text).sample, {"batch": 1, "latent": lat}


def _stylegan2(size: str, device: torch.device, dtype: torch.dtype):
    from diffedit_lab.testing.stylegan2 import random_generator, tiny_generator
    from experiments.bench.models import STYLEGAN2_F_1024

    if size == "real":
        gen = random_generator(**STYLEGAN2_F_1024, seed=SEED, device=device)
    else:
        gen = tiny_generator(seed=SEED, device=device)
    gen = gen.requires_grad_(False).eval()
    with torch.no_grad():
        w = gen.sample_wplus([SEED], truncation=0.7).to(device)
    return gen, lambda: gen.synthesis(w, noise_mode="const"), {"batch": 1, "resolution": gen.size, "dtype": "fp32"}


def _adm(size: str, device: torch.device, dtype: torch.dtype):
    from experiments.bench.sdft import build_student

    prior = build_student(size, device)
    unet = prior.unet.to(dtype).eval().requires_grad_(False)
    res = prior.image_size
    x = torch.randn(1, 3, res, res, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    return unet, lambda: unet(x, t).sample, {"batch": 1, "resolution": res}


def _ddpm_and_rectified(size: str, device: torch.device):
    """The Rectifier's base U-Net and the rectified forward (fp32, batch 2), from :func:`.rectifier.build`."""
    from diffedit_lab.methods.rectifier.rectified import base_kernels
    from diffedit_lab.models.rectifier import modulate, modulated_eps
    from experiments.bench.rectifier import build

    base, net = build(size, device)
    b, res = 2, base.image_size
    g = torch.Generator().manual_seed(SEED)
    x0 = (torch.rand(b, 3, res, res, generator=g) * 2 - 1).to(device)
    x_t = torch.randn(b, 3, res, res, generator=g).to(device)
    t = torch.randint(0, base.num_train_timesteps, (b,), generator=g).to(device)
    with torch.no_grad():
        p_t = base.x0_from_eps(x_t, base.predict_eps(x_t, t), t).clamp(-1, 1)
    kernels = base_kernels(base.unet, net)
    info = {"batch": b, "resolution": res, "dtype": "fp32"}

    def rectified():
        return modulated_eps(base, x_t, t, modulate(kernels, net(x0, p_t, t)), "grouped")

    return (base, net), (lambda: base.predict_eps(x_t, t)), rectified, info


def paths(size: str, device: torch.device, dtype: torch.dtype) -> Iterator[tuple[str, Callable[[], Any], dict]]:
    """(name, callable, info) of each path, built one at a time (each freed before the next is built)."""
    for name, build in (("sd_unet", _sd_unet), ("stylegan2_1024", _stylegan2), ("adm_256", _adm)):
        model, fn, info = build(size, device, dtype)
        yield name, fn, {"dtype": str(dtype).removeprefix("torch."), **info}
        del model, fn
        gc.collect()
    models, plain, rectified, info = _ddpm_and_rectified(size, device)
    yield "ddpm_celebahq_256", plain, info
    yield "rectified_unet", rectified, {**info, "strategy": "grouped"}
    del models, plain, rectified


def _matmul(n: int, device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    """One n×n @ n×n product into a preallocated output (2·n³ FLOPs, no allocation in the timed call)."""
    g = torch.Generator().manual_seed(SEED)
    lhs = torch.randn(n, n, generator=g).to(device, dtype)
    rhs = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return lambda: torch.mm(lhs, rhs, out=out)


def measure(size: str, device: torch.device, repeats: int = 3, min_run_time: float = 1.0) -> dict[str, Any]:
    """The matmul peak and, per path, GFLOP per call, median seconds, GFLOP/s and the share of the peak."""
    from experiments.bench.harness import device_name

    dtype = torch.float16 if (size == "real" and device.type == "cuda") else torch.float32
    n = MATMUL_N[size]
    matmul, matmul_gflop = _matmul(n, device, dtype), 2 * n**3 / 1e9
    result: dict[str, Any] = {
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "timer": "torch.utils.benchmark.Timer (median), each path in alternation with the matmul",
        "matmul": {"n": n, "dtype": str(dtype).removeprefix("torch."), "gflop": matmul_gflop},
        "paths": {},
    }
    peaks = []
    with torch.no_grad():
        for name, fn, info in paths(size, device, dtype):
            gflop = count_gflops(fn)
            sec, ref_sec, calls = time_interleaved(fn, matmul, repeats, min_run_time)
            rate, peak = gflop / sec, matmul_gflop / ref_sec
            peaks.append(peak)
            result["paths"][name] = {**info, "gflop": gflop, "median_s": sec, "calls": calls, "gflop_per_s": rate,
                                     "matmul_gflop_per_s": peak, "of_matmul_peak": rate / peak}  # fmt: skip
            print(f"  flops.{name:<22} {size:<5} {gflop:>9.1f} GFLOP in {sec * 1e3:>10.1f} ms: {rate:>7.1f} GFLOP/s "
                  f"= {rate / peak:.0%} of the matmul's {peak:.1f} GFLOP/s", flush=True)  # fmt: skip
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["matmul"] |= {"gflop_per_s": max(peaks), "gflop_per_s_per_path": peaks}  # the best: the least contended
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = suite_parser(__doc__, "(unused)")
    args = p.parse_args(argv)
    out = {}
    for size in suite_sizes(args.sizes, args.device):
        device = torch.device("cpu") if size == "tiny" else real_device(args.device)
        out[size] = measure(size, device, repeats=args.repeats)
    return {"flops": out}


if __name__ == "__main__":
    main(sys.argv[1:])
