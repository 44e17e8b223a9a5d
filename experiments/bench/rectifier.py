"""The Rectifier's rectified U-Net forward vs the plain U-Net forward at the same batch (issue #10).

Entries (all under ``torch.no_grad``, same x_t, t and x₀):

* ``rectifier.plain_forward``: ε_θ(x_t, t) of the base U-Net;
* ``rectifier.forward.<strategy>``: the hypernetwork R(x₀, P_t, t) (encoder + every subnet), θ̂ = θ·(1 + Δ) and the
  U-Net with the per-sample kernels, P_t given — for ``grouped`` (grouped convolutions) and ``vmap``
  (vmap over functional_call);
* ``rectifier.step.grouped``: what one sampling / training step costs in full: the base pass for P_t + the above.

Goal (issue #10): ``forward.grouped`` ≤ 1.5× ``plain_forward`` at batch 8. ``tiny``: the tiny pixel U-Net and the
tiny rectifier on the CPU (batch 2). ``real`` (CUDA): a random U-Net with the shapes of google/ddpm-ema-celebahq-256
(fp32: ``method.base_dtype`` admits nothing else, half precision rounds small Δ away) and the paper's rectifier
(ResNet-34 encoder, 256-wide subnets, all mid/up convs) in fp32, batch 8; ``make bench-real`` without a GPU runs
the same at batch 2 on the CPU (``grouped`` only).

    python -m experiments.bench.rectifier [--sizes tiny|real|all] [--device cpu|cuda] [--batch N] [--repeats N]
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from experiments.bench.harness import SEED, Bench, real_device, suite_parser, suite_sizes
from experiments.bench.models import DDPM_CELEBAHQ_UNET, n_params

BATCH = {"tiny": 2, "real": 8}
STRATEGIES = ("grouped", "vmap")


def build(size: str, device: torch.device):
    """(base prior, rectifier net) with random weights; the heads get small random weights (Δ ≠ 0)."""
    from diffedit_lab.models.rectifier import RectifierNet, select_layers
    from diffedit_lab.testing.priors import random_unet_prior, tiny_unet_prior
    from diffedit_lab.testing.rectifier import tiny_rectifier
    from diffedit_lab.utils.rng import seeded

    if size == "tiny":
        base = tiny_unet_prior(seed=SEED, device=device)
        net = tiny_rectifier(base.unet, seed=SEED)
    else:
        base = random_unet_prior(DDPM_CELEBAHQ_UNET, seed=SEED, dtype="fp32", device=device)  # method: fp32 only
        with seeded(SEED, device):
            net = RectifierNet(select_layers(base.unet), base.image_size)
    with seeded(SEED):
        for sub in net.subnets:
            torch.nn.init.normal_(sub.head_out.weight, std=1e-3)
    return base, net.to(device).eval()


def bench_rectifier(
    bench: Bench,
    size: str,
    device: torch.device,
    batch: int | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
    repeats: int | None = None,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Times the entries of the module docstring; returns the setting, the ratios to the plain forward and (on
    CUDA) the peak memory of each, plus a check that both strategies give the same ε (when both are timed).
    ``strategies``: which ``rectifier.forward.<strategy>`` entries (the real-size CPU run times ``grouped`` only)."""
    from diffedit_lab.methods.rectifier.rectified import base_kernels, rectified_eps
    from diffedit_lab.models.rectifier import modulate, modulated_eps

    torch.manual_seed(SEED)
    base, net = build(size, device)
    b, res = batch or BATCH[size], base.image_size
    g = torch.Generator().manual_seed(SEED)
    x0 = (torch.rand(b, 3, res, res, generator=g) * 2 - 1).to(device)
    x_t = torch.randn(b, 3, res, res, generator=g).to(device)
    t = torch.randint(0, base.num_train_timesteps, (b,), generator=g).to(device)
    with torch.no_grad():
        p_t = base.x0_from_eps(x_t, base.predict_eps(x_t, t), t).clamp(-1, 1)
    kernels = base_kernels(base.unet, net)

    def forward(strategy: str):
        @torch.no_grad()
        def fn():
            return modulated_eps(base, x_t, t, modulate(kernels, net(x0, p_t, t)), strategy)

        return fn

    @torch.no_grad()
    def plain():
        return base.predict_eps(x_t, t)

    @torch.no_grad()
    def step():
        return rectified_eps(base, net, x0, x_t, t, "grouped").eps

    extra = {"batch": b, "resolution": res, "rectifier_params": n_params(net), "unet_params": n_params(base.unet),
             "modulated_layers": len(net.layers), "generated_per_sample": net.generated_per_sample}  # fmt: skip
    fns = {"rectifier.plain_forward": (plain, extra)}
    fns |= {f"rectifier.forward.{s}": (forward(s), extra) for s in strategies}
    fns["rectifier.step.grouped"] = (step, extra)
    diff = None
    if {"grouped", "vmap"} <= set(strategies):
        with torch.no_grad():
            diff = float((forward("grouped")() - forward("vmap")()).abs().max())
    bench.measure(size, device, fns, repeats=repeats, warmup=warmup)
    plain_ms = bench.median("rectifier.plain_forward", size, b)
    ratios = {
        name.removeprefix("rectifier."): bench.median(name, size, b) / plain_ms
        for name in fns
        if name != "rectifier.plain_forward"
    }
    peaks = {e["name"]: e.get("peak_cuda_mem_mb") for e in bench.entries if e["size"] == size and e["name"] in fns}
    fns.clear()  # the closures hold the models: free them before the next size
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**extra, "ratios_to_plain": ratios, "peak_cuda_mem_mb": peaks, "max_abs_diff_grouped_vs_vmap": diff}


def rectified_step(base, x: torch.Tensor, t: torch.Tensor, device: torch.device):
    """For :mod:`experiments.bench.latency`: one rectified ε of ``x`` at ``t`` on ``base`` (the paper's rectifier
    over all mid/up convs of that U-Net; base pass for P_t + hypernetwork + modulated U-Net), as a callable."""
    from diffedit_lab.methods.rectifier.rectified import rectified_eps
    from diffedit_lab.models.rectifier import RectifierNet, select_layers
    from diffedit_lab.utils.rng import seeded

    with seeded(SEED, device):
        net = RectifierNet(select_layers(base.unet), base.image_size).to(device).eval()

    @torch.no_grad()
    def fn() -> torch.Tensor:
        return rectified_eps(base, net, x, x, t, "grouped").eps

    return fn


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = suite_parser(__doc__, "batch (default: tiny 2, real 8)")
    args = p.parse_args(argv)
    sizes = suite_sizes(args.sizes, args.device)
    bench = Bench(args.repeats, args.warmup)
    info = {}
    for size in sizes:
        device = torch.device("cpu") if size == "tiny" else real_device(args.device)
        info[size] = bench_rectifier(bench, size, device, args.batch)
        r = {k: round(v, 2) for k, v in info[size]["ratios_to_plain"].items()}
        print(f"  rectified / plain forward ({size}): {r}; peak CUDA MB: {info[size]['peak_cuda_mem_mb']}", flush=True)
    return {"measurements": bench.entries, "rectifier": info}


if __name__ == "__main__":
    main(sys.argv[1:])
