"""Edit latency per image of every method in the comparison table, at REAL sizes with random weights, on any device
(issue #11): ``python -m experiments.bench.latency [--device cpu|cuda] [--repeats N]``; ``make bench`` runs it
(``--sizes real``) on the CPU when no GPU is visible.

One pass through the full pipelines at real size costs minutes on a 2-core CPU (25–100 UNet calls of SD v1.4), so
the pipelines are composed from their MEASURED parts, each the median of ``--repeats`` timed calls, interleaved:

* ``sdd``      — ``LevelsMapper.edit`` + StyleGAN2 config-f 1024 synthesis (measured whole);
* ``sdedit_α`` — VAE encode + round(α·50) CFG steps of the SD v1.4 UNet (one call on the doubled batch) + VAE decode,
  at 512 px (the SDD paper's Fig. 6 SDEdit settings, α ∈ {0.3, 0.5, 0.7});
* ``ddib``     — VAE encode + 50 conditional UNet steps (inversion, guidance 1: one batch-1 call) + 50 CFG steps +
  VAE decode (``method=ddib``'s defaults);
* ``rectifier`` — 50 DDIM-inversion + 50 sampling steps at 256 px, each through the rectified model (base pass of
  the ddpm-celebahq U-Net for P_t + hypernetwork + modulated U-Net; ``method=rectifier``'s ``invert_with:
  rectified``).

FLOPs of the generator and of a UNet step come from ``torch.utils.flop_counter`` (multiply-adds × 2), so the record
also says how efficiently each network uses the device (GFLOP/s) — the generator should be at least as efficient as
the UNet. The ratios are each method's latency over SDD's.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from experiments.bench.harness import SEED, Bench, device_name, environment, write_results
from experiments.bench.models import (
    DDPM_CELEBAHQ_UNET,
    SD14_SCHEDULER,
    SD14_TEXT,
    SD14_UNET,
    SD14_VAE,
    STYLEGAN2_F_1024,
    n_params,
)

SDEDIT_STEPS, SDEDIT_ALPHAS, DDIB_STEPS, RECTIFIER_STEPS = 50, (0.3, 0.5, 0.7), 50, 50


def gflops(fn) -> float:
    """GFLOPs of one call of ``fn`` (no grad), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() / 1e9


def build(device: torch.device):
    from diffedit_lab.models.mapper import LevelsMapper
    from diffedit_lab.testing.priors import random_sd_prior, random_unet_prior
    from diffedit_lab.testing.stylegan2 import random_generator

    dtype = "fp16" if device.type == "cuda" else "fp32"
    sd = random_sd_prior(SD14_UNET, SD14_VAE, SD14_TEXT, image_size=512, scheduler=SD14_SCHEDULER,
                         tokenizer_max_length=77, seed=SEED, dtype=dtype, device=device)  # fmt: skip
    gen = random_generator(**STYLEGAN2_F_1024, seed=SEED, device=device).requires_grad_(False)
    torch.manual_seed(SEED)
    mapper = LevelsMapper(dim=gen.style_dim).to(device).eval()
    uncond = random_unet_prior(DDPM_CELEBAHQ_UNET, seed=SEED, dtype=dtype, device=device)
    return sd, gen, mapper, uncond


def measure(bench: Bench, device: torch.device) -> dict[str, Any]:
    sd, gen, mapper, uncond = build(device)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        w = gen.sample_wplus([SEED], truncation=0.7).to(device)
        cond, empty = sd.encode_text(["a photo of a smiling face"]), sd.encode_text([""])
    image = (torch.rand(1, 3, 512, 512, generator=g) * 2 - 1).to(device)
    z = torch.randn(1, 4, 64, 64, generator=g).to(device)
    x256 = torch.randn(1, 3, 256, 256, generator=g).to(device)
    t = torch.tensor([500], device=device)

    def sdd() -> torch.Tensor:
        return gen.synthesis(mapper.edit(w), noise_mode="const")

    def unet_cfg() -> torch.Tensor:
        return sd.predict_eps(z, t, cond=cond, uncond=empty, guidance_scale=7.5)

    def unet_cond() -> torch.Tensor:
        return sd.predict_eps(z, t, cond=cond)

    def vae_encode() -> torch.Tensor:
        return sd.to_model_space(image)

    def vae_decode() -> torch.Tensor:
        return sd.to_image_space(z)

    def pixel_unet() -> torch.Tensor:
        return uncond.predict_eps(x256, t)

    parts = {
        "latency.sdd_edit": (sdd, {"note": "LevelsMapper.edit + StyleGAN2 config-f 1024 synthesis"}),
        "latency.sd_unet_cfg_step": (unet_cfg, {"note": "SD v1.4 UNet, CFG: one call on batch 2, 64×64 latents"}),
        "latency.sd_unet_cond_step": (unet_cond, {"note": "SD v1.4 UNet, conditional only (batch 1)"}),
        "latency.sd_vae_encode": (vae_encode, {"note": "VAE encode 512 px"}),
        "latency.sd_vae_decode": (vae_decode, {"note": "VAE decode 64×64 → 512 px"}),
        "latency.pixel_unet_step": (pixel_unet, {"note": "ddpm-celebahq-256 UNet2DModel, batch 1"}),
    }
    rectified = _rectified_forward(uncond, x256, t, device)
    parts["latency.rectified_unet_step"] = (rectified, {"note": "base pass + hypernetwork + modulated U-Net"})
    with torch.no_grad():
        bench.measure("real", device, parts)
    ms = {name.removeprefix("latency."): bench.median(name, "real") for name in parts}
    flops = {"generator": gflops(sdd), "sd_unet_cfg_step": gflops(unet_cfg)}
    efficiency = {
        "generator_gflop_per_s": flops["generator"] / (ms["sdd_edit"] / 1e3),
        "sd_unet_gflop_per_s": flops["sd_unet_cfg_step"] / (ms["sd_unet_cfg_step"] / 1e3),
    }
    efficiency["generator_over_unet"] = efficiency["generator_gflop_per_s"] / efficiency["sd_unet_gflop_per_s"]
    codec = ms["sd_vae_encode"] + ms["sd_vae_decode"]
    methods = {"sdd": ms["sdd_edit"]}
    for a in SDEDIT_ALPHAS:
        methods[f"sdedit_{round(a * 100)}"] = codec + round(a * SDEDIT_STEPS) * ms["sd_unet_cfg_step"]
    methods["ddib"] = codec + DDIB_STEPS * (ms["sd_unet_cond_step"] + ms["sd_unet_cfg_step"])
    methods["rectifier"] = 2 * RECTIFIER_STEPS * ms["rectified_unet_step"]
    return {
        "device": device_name(device),
        "dtype": "fp16" if device.type == "cuda" else "fp32",
        "threads": torch.get_num_threads(),
        "parts_ms": ms,
        "gflops": flops,
        "efficiency": efficiency,
        "latency_ms_per_image": methods,
        "over_sdd": {k: v / methods["sdd"] for k, v in methods.items()},
        "params": {"generator": n_params(gen), "sd_unet": n_params(sd.unet), "pixel_unet": n_params(uncond.unet)},
        "steps": {
            "sdedit": SDEDIT_STEPS,
            "sdedit_alphas": list(SDEDIT_ALPHAS),
            "ddib": DDIB_STEPS,
            "rectifier": RECTIFIER_STEPS,
        },  # fmt: skip
    }


def _rectified_forward(uncond, x, t, device):
    """The rectifier's full step at real size (:func:`experiments.bench.rectifier.rectified_step`)."""
    from experiments.bench.rectifier import rectified_step

    return rectified_step(uncond, x, t, device)


def print_latency(info: dict[str, Any]) -> None:
    print(f"\nedit latency per image, real sizes, {info['device']} ({info['dtype']}, {info['threads']} threads):")
    for name, value in info["latency_ms_per_image"].items():
        print(f"  {name:<12} {value / 1e3:>9.2f} s   {info['over_sdd'][name]:>8.1f}× SDD")
    e = info["efficiency"]
    print(f"  GFLOP/s: generator {e['generator_gflop_per_s']:.1f}, SD UNet {e['sd_unet_gflop_per_s']:.1f} "
          f"(generator/UNet {e['generator_over_unet']:.2f})")  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--out", default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args.repeats, args.warmup)
    info = measure(bench, torch.device(args.device))
    print_latency(info)
    results = {"env": environment(), "latency": info, "measurements": bench.entries}
    if args.out:
        write_results(results, args.out)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
