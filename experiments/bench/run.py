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
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SEED = 0
PROMPT = "a photo of a smiling face"
T_PROBE = 500  # timestep for the per-call prior measurements
SDEDIT_STEPS, SDEDIT_STRENGTH, SDEDIT_CFG = 50, 0.5, 7.5
TRAIN_BATCH = 2
TRAIN_RULE = "fixed_500"

# --- SD v1.4 shapes, written out (the hub configs of CompVis/stable-diffusion-v1-4), so nothing is downloaded
SD14_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
)
SD14_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
)
SD14_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD14_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    steps_offset=1,
)
# google/ddpm-ema-celebahq-256's UNet2DModel config.
DDPM_CELEBAHQ_UNET = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
    norm_eps=1e-6,
    act_fn="silu",
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
)
_RANDOM_INIT = dict(checkpoint=None, seed=SEED)
STYLEGAN2_F_1024 = dict(_RANDOM_INIT, size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)
STYLEGAN2_TINY = dict(_RANDOM_INIT, size=32, style_dim=32, n_mlp=2, channel_multiplier=1, tiny=True)  # = demo


# --- timing -------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(times_ms: list[float], warmup: int) -> dict[str, Any]:
    return {
        "median_ms": statistics.median(times_ms),
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "repeats": len(times_ms),
        "warmup": warmup,
    }


def time_calls(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Warm each function up, then time ``repeats`` rounds with the functions interleaved (so slow drifts of
    the machine hit all of them alike); per function: median/min/max ms and, on CUDA, the peak memory of its
    calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    peak: dict[str, int] = dict.fromkeys(fns, 0)
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
            if device.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
    out = {}
    for name in fns:
        out[name] = _summary(times[name], warmup)
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
    ) -> None:
        """``fns``: name → (callable, extra fields of the entry); functions given together are interleaved."""
        torch.manual_seed(SEED)
        stats = time_calls({k: v[0] for k, v in fns.items()}, device, repeats or self.repeats, self.warmup)
        for name, (_, extra) in fns.items():
            entry = {"name": name, "size": size, "device": _device_name(device), **extra, **stats[name]}
            self.entries.append(entry)
            print(f"  {name:<28} {size:<5} {entry['median_ms']:>11.2f} ms", flush=True)

    def median(self, name: str, size: str) -> float | None:
        for e in self.entries:
            if e["name"] == name and e["size"] == size:
                return e["median_ms"]
        return None


# --- environment --------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
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


# --- model builders -----------------------------------------------------------------------------------------
def build_sd(size: str, device: torch.device):
    """Tiny SD (the tests/demo miniature, fp32) or a random SD v1.4-shaped prior at 512 px in fp16."""
    from diffedit_lab.diffusion.priors import StableDiffusionPrior, tiny_clip_tokenizer

    if size == "tiny":
        return StableDiffusionPrior.tiny(seed=SEED).to(device)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    # A real CLIP BPE tokenizer with a tiny vocabulary (ids < 49408), padded to SD's 77 tokens.
    tokenizer = tiny_clip_tokenizer(max_length=77)
    with torch.device(device):  # random init directly on the GPU (seconds, instead of a minute on the CPU)
        unet = UNet2DConditionModel(**SD14_UNET)
        vae = AutoencoderKL(**SD14_VAE)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **SD14_TEXT,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    prior = StableDiffusionPrior(
        unet, vae, text_encoder, tokenizer, DDPMScheduler(**SD14_SCHEDULER), image_size=512, dtype="fp16"
    )
    return prior.to(device)


def build_uncond(size: str, device: torch.device):
    from diffedit_lab.diffusion.priors import UnconditionalPrior

    if size == "tiny":
        return UnconditionalPrior.tiny(seed=SEED).to(device)
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(SEED)
    with torch.device(device):
        unet = UNet2DModel(**DDPM_CELEBAHQ_UNET)
    return UnconditionalPrior(unet, DDPMScheduler(num_train_timesteps=1000), dtype="fp16").to(device)


def build_generator_and_mapper(size: str, device: torch.device):
    from diffedit_lab.models.mapper import LevelsMapper
    from diffedit_lab.models.stylegan2 import build_generator

    gen_cfg = STYLEGAN2_TINY if size == "tiny" else STYLEGAN2_F_1024
    gen = build_generator(**gen_cfg).to(device).requires_grad_(False)
    torch.manual_seed(SEED)
    # All three levels: the costliest mapper.
    mapper = LevelsMapper(dim=gen_cfg["style_dim"]).to(device).eval()
    return gen, mapper


def _n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# --- 1. per-call cost of the diffusion core -----------------------------------------------------------------
def bench_core(bench: Bench, size: str, device: torch.device, sd, uncond) -> None:
    from diffedit_lab.diffusion.score_distillation import ScoreDistillation

    res, lat = sd.image_size, sd.image_size // (2 ** (len(sd.vae.config.block_out_channels) - 1))
    cond, uncond_emb = sd.encode_text([PROMPT]), sd.encode_text([""])
    x_t = torch.randn(1, sd.unet.config.in_channels, lat, lat, device=device)
    image = torch.rand(1, 3, res, res, device=device) * 2 - 1
    sds = ScoreDistillation(sd, guidance_scale=100.0)
    x_img = image.clone().requires_grad_(True)

    @torch.no_grad()
    def predict_eps_cfg():
        return sd.predict_eps(x_t, T_PROBE, cond=cond, uncond=uncond_emb, guidance_scale=SDEDIT_CFG)

    @torch.no_grad()
    def vae_encode():
        return sd.to_model_space(image)

    def sds_step():
        x_img.grad = None
        sds(x_img, T_PROBE, PROMPT).loss.backward()
        return x_img.grad

    px = uncond.image_size
    x_px = torch.randn(1, uncond.in_channels, px, px, device=device)

    @torch.no_grad()
    def uncond_eps():
        return uncond.predict_eps(x_px, T_PROBE)

    dtype = str(sd.dtype).replace("torch.", "")
    sd_info = {
        "batch": 1,
        "resolution": res,
        "latent": lat,
        "dtype": dtype,
        "params_unet": _n_params(sd.unet),
        "params_vae": _n_params(sd.vae),
    }
    bench.measure(
        size,
        device,
        {
            "sd.predict_eps_cfg": (
                predict_eps_cfg,
                {**sd_info, "guidance_scale": SDEDIT_CFG, "note": "one UNet call on (uncond, cond)"},
            ),
            "sd.vae_encode": (vae_encode, sd_info),
            "sd.sds_step": (
                sds_step,
                {
                    **sd_info,
                    "guidance_scale": 100.0,
                    "note": "VAE encode + CFG UNet + injected gradient, backward to the image",
                },
            ),
            "uncond.predict_eps": (
                uncond_eps,
                {
                    "batch": 1,
                    "resolution": px,
                    "dtype": str(next(uncond.unet.parameters()).dtype).replace("torch.", ""),
                    "params_unet": _n_params(uncond.unet),
                },
            ),
        },
    )


# --- 2. SDD one-pass edit vs SDEdit -------------------------------------------------------------------------
def bench_edit(bench: Bench, size: str, device: torch.device, sd, gen, mapper) -> None:
    from diffedit_lab.diffusion.samplers import sdedit

    with torch.no_grad():
        w = gen.sample_wplus([SEED], truncation=0.7).to(device)
        image = gen.synthesis(w, noise_mode="const")  # the image SDEdit edits: the same generator output
    cond = {"cond": sd.encode_text([PROMPT]), "uncond": sd.encode_text([""]), "guidance_scale": SDEDIT_CFG}
    gen_rng = torch.Generator(device=device)

    @torch.no_grad()
    def sdd_edit():
        return gen.synthesis(mapper.edit(w), noise_mode="const")

    @torch.no_grad()
    def sdedit_edit():
        gen_rng.manual_seed(SEED)
        z = sd.to_model_space(image, generator=gen_rng)
        z = sdedit(sd, z, strength=SDEDIT_STRENGTH, num_steps=SDEDIT_STEPS, generator=gen_rng, cond=cond)
        return sd.to_image_space(z)

    bench.measure(
        size,
        device,
        {
            "edit.sdd": (
                sdd_edit,
                {
                    "batch": 1,
                    "resolution": gen.size,
                    "params": _n_params(gen, mapper),
                    "note": "LevelsMapper.edit + StyleGAN2Generator.synthesis (fp32)",
                },
            ),
            "edit.sdedit": (
                sdedit_edit,
                {
                    "batch": 1,
                    "resolution": sd.image_size,
                    "num_steps": SDEDIT_STEPS,
                    "strength": SDEDIT_STRENGTH,
                    "unet_calls": round(SDEDIT_STEPS * SDEDIT_STRENGTH),
                    "guidance_scale": SDEDIT_CFG,
                    "dtype": str(sd.dtype).replace("torch.", ""),
                    "note": "VAE encode + DDIM SDEdit (CFG) + VAE decode through StableDiffusionPrior",
                },
            ),
        },
    )


# --- 3. SDD training step: framework vs bare PyTorch --------------------------------------------------------
def compose_sdd(out_dir: Path, extra: list[str] = ()):
    from diffedit_lab.utils.config import compose_config

    return compose_config(
        [
            "experiment=demo",
            "logger=none",
            "callbacks=none",
            f"paths.output_dir={out_dir}",
            f"paths.cache_dir={out_dir / 'cache'}",
            "method.loss.identity=0",
            *extra,
        ]
    )


class BareSDDStep:
    """The SDD training step written out in plain PyTorch on the same frozen networks: mapper edit →
    generator → VAE encode → noise → CFG UNet → g = (1 − ᾱ_t)(ε̂ − ε) (top-k over the batch) →
    ½‖z − (z − g).detach()‖² + λ_l2 · MSE(w, w') → backward → AdamW step."""

    def __init__(self, mapper, gen, sd, cfg, t: int, batch: int):
        self.mapper, self.gen = mapper, gen
        self.unet, self.vae = sd.unet, sd.vae
        self.sf = float(sd.vae.config.scaling_factor)
        self.res = sd.image_size
        self.abar = sd.scheduler.alphas_cumprod.float().to(sd.alphas_cumprod.device)
        self.scale = float(cfg.guidance.guidance_scale)
        self.topk = cfg.guidance.topk
        self.lambda_l2 = float(cfg.loss.latent_l2)
        self.edit_scale = float(cfg.mapper.edit_scale)
        self.t = torch.full((batch,), t, dtype=torch.long, device=sd.alphas_cumprod.device)
        with torch.no_grad():  # text embeddings once, as the framework's prompt cache does
            tok = sd.tokenizer(
                [cfg.guidance.negative_prompt, cfg.prompt.text],
                padding="max_length",
                max_length=sd.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            uncond, cond = sd.text_encoder(tok.input_ids.to(self.t.device))[0].chunk(2)
        self.emb = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
        self.opt = torch.optim.AdamW(
            mapper.parameters(), lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay)
        )

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        w_edit = w + self.edit_scale * self.mapper(w)
        x = self.gen.synthesis(w_edit, noise_mode="const")
        if x.shape[-2:] != (self.res, self.res):
            x = F.interpolate(x, (self.res, self.res), mode="bilinear", align_corners=False)
        z = self.vae.encode(x).latent_dist.sample() * self.sf
        eps = torch.randn(z.shape, device=z.device, dtype=z.dtype)  # not randn_like: z is a strided view
        a = self.abar[self.t].view(-1, 1, 1, 1)
        with torch.no_grad():
            z_t = a.sqrt() * z + (1 - a).sqrt() * eps
            t2 = torch.cat([self.t, self.t])
            out = self.unet(torch.cat([z_t, z_t]), t2, encoder_hidden_states=self.emb).sample
            e_u, e_c = out.chunk(2)
            g = torch.nan_to_num((1 - a) * (e_u + self.scale * (e_c - e_u) - eps))
            if self.topk and 0 < self.topk < g.numel():
                flat = g.flatten()
                keep = flat.abs().topk(int(self.topk)).indices
                g = torch.zeros_like(flat).index_copy_(0, keep, flat[keep]).view_as(g)
        loss_sds = 0.5 * ((z - (z - g).detach()) ** 2).sum()
        return loss_sds + self.lambda_l2 * F.mse_loss(w_edit, w)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        loss = self.loss(w)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def bench_train(bench: Bench, device: torch.device, work_dir: Path) -> dict[str, Any]:
    """Framework (Hydra-composed SDDModule.training_step + backward + its AdamW) vs :class:`BareSDDStep`, same
    tiny models, codes, t and seeds. Returns a consistency check: both first-step losses from one state."""
    from diffedit_lab.methods.sdd import selection as sel
    from diffedit_lab.run import build_method

    cfg = compose_sdd(work_dir)
    torch.manual_seed(SEED)
    module = build_method(cfg.method).to(device)
    module.selection = sel.select(TRAIN_RULE)
    gen, sd = module.generator, module.teacher
    with torch.no_grad():
        trunc = float(cfg.method.codes.truncation)
        w = gen.sample_wplus(list(range(TRAIN_BATCH)), truncation=trunc).to(device)
    t = module.selection.timesteps[0]
    bare_mapper = copy.deepcopy(module.mapper)
    bare = BareSDDStep(bare_mapper, gen, sd, cfg.method, t=t, batch=TRAIN_BATCH)
    opt = module.configure_optimizers()
    batch = {"w": w, "index": torch.arange(TRAIN_BATCH)}

    def framework_loss():
        return module.training_step(batch, 0)

    def framework_step():
        loss = framework_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    # Same math? First losses from identical mapper weights and RNG state.
    torch.manual_seed(SEED)
    loss_fw = float(framework_loss().detach())
    torch.manual_seed(SEED)
    loss_bare = float(bare.loss(w).detach())
    check = {"loss_framework": loss_fw, "loss_bare": loss_bare, "abs_diff": abs(loss_fw - loss_bare)}

    info = {
        "batch": TRAIN_BATCH,
        "t": t,
        "resolution": gen.size,
        "teacher_resolution": sd.image_size,
        "guidance_scale": float(cfg.method.guidance.guidance_scale),
        "topk": cfg.method.guidance.topk,
        "lambda_l2": float(cfg.method.loss.latent_l2),
        "trainable_params": _n_params(module.mapper),
    }
    bench.measure(
        "tiny",
        device,
        {
            "train.sdd_step.framework": (
                framework_step,
                {
                    **info,
                    "note": "hydra-composed SDDModule.training_step (demo, identity off) + backward + AdamW",
                },
            ),
            "train.sdd_step.bare": (lambda: bare.step(w), {**info, "note": "the same step in plain PyTorch"}),
        },
    )
    return check


def bench_trainer(bench: Bench, device: torch.device, work_dir: Path) -> None:
    """The same step inside ``Trainer.fit`` (the composed ``trainer`` config: Lightning's loop, optimizer
    closure, ``self.log`` bookkeeping), timed per batch by a callback from ``on_train_batch_start`` to
    ``on_train_batch_end``."""
    import logging

    from lightning.pytorch.callbacks import Callback

    from diffedit_lab.methods.sdd import selection as sel
    from diffedit_lab.run import build_method
    from diffedit_lab.utils.instantiate import instantiate

    class StepTimer(Callback):
        def __init__(self):
            self.times: list[float] = []
            self._t0 = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            _sync(device)
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _sync(device)
            self.times.append((time.perf_counter() - self._t0) * 1e3)

    steps = bench.warmup + bench.repeats
    quiet_trainer = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    cfg = compose_sdd(work_dir / "trainer", [f"trainer.max_steps={steps}", *quiet_trainer])
    torch.manual_seed(SEED)
    module = build_method(cfg.method)
    module.selection = sel.select(TRAIN_RULE)
    with torch.no_grad():
        trunc = float(cfg.method.codes.truncation)
        w = module.generator.sample_wplus(list(range(TRAIN_BATCH)), truncation=trunc)
    data = [{"w": w[i % TRAIN_BATCH], "index": i} for i in range(steps * TRAIN_BATCH)]
    loader = torch.utils.data.DataLoader(data, batch_size=TRAIN_BATCH, shuffle=False)
    timer = StepTimer()
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False)
        trainer.fit(module, train_dataloaders=loader)
    finally:
        for q, lvl in zip(quiet, levels, strict=True):
            q.setLevel(lvl)
    timed = timer.times[bench.warmup :]
    entry = {
        "name": "train.sdd_step.trainer",
        "size": "tiny",
        "device": _device_name(device),
        "batch": TRAIN_BATCH,
        "t": module.selection.timesteps[0],
        "log_every_n_steps": int(cfg.trainer.log_every_n_steps),
        "note": "the framework step inside Trainer.fit (loop + closure + logging), per batch",
        **_summary(timed, bench.warmup),
    }
    bench.entries.append(entry)
    print(f"  {entry['name']:<28} {'tiny':<5} {entry['median_ms']:>11.2f} ms", flush=True)


# --- driver -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench.run",
        description=__doc__.split("\n\n")[0],
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
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads for the CPU runs (default 1: tiny ops on a 2-core box thrash with 2)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.quick:
        args.repeats = min(args.repeats, 2)
    return args


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'measurement':<28} {'size':<5} {'device':<24} {'median ms':>11} {'min–max ms':>21}")
    for e in results["measurements"]:
        spread = f"{e['min_ms']:.2f}–{e['max_ms']:.2f}"
        print(f"{e['name']:<28} {e['size']:<5} {e['device'][:24]:<24} {e['median_ms']:>11.2f} {spread:>21}")
    for name, per_size in results["ratios"].items():
        for size, value in per_size.items():
            print(f"ratio {name} [{size}]: {value:.2f}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=re.escape("You are trying to `self.log()`"))
    # Lightning 2.6 on torch 2.14:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    if args.sizes == "real" and not cuda:
        raise SystemExit("--sizes real needs a CUDA device (none is visible); use --sizes tiny")
    sizes = {"tiny": ["tiny"], "real": ["real"], "all": ["tiny"] + ["real"] * cuda}[args.sizes]

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
        "skipped": [] if cuda or args.sizes == "tiny" else ["real: no CUDA device visible"],
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffedit_bench_") as tmp:
        for size in sizes:
            device = torch.device("cpu" if size == "tiny" else "cuda")
            print(f"[{size} on {_device_name(device)}]", flush=True)
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
            if device.type == "cuda":
                torch.cuda.empty_cache()

    ratios: dict[str, dict[str, float]] = {
        "sdedit_over_sdd_edit": {},
        "sdd_framework_over_bare_step": {},
        "sdd_trainer_over_bare_step": {},
    }
    for size in sizes:
        sdd, sde = bench.median("edit.sdd", size), bench.median("edit.sdedit", size)
        if sdd and sde:
            ratios["sdedit_over_sdd_edit"][size] = sde / sdd
        fw, bare = bench.median("train.sdd_step.framework", size), bench.median("train.sdd_step.bare", size)
        if fw and bare:
            ratios["sdd_framework_over_bare_step"][size] = fw / bare
        loop = bench.median("train.sdd_step.trainer", size)
        if loop and bare:
            ratios["sdd_trainer_over_bare_step"][size] = loop / bare
    results.update(measurements=bench.entries, ratios=ratios, total_seconds=time.perf_counter() - t_start)
    results["env"]["torch_num_threads"] = torch.get_num_threads()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from diffedit_lab.utils.io import atomic_json_dump

    args = parse_args(argv)
    results = run(args)
    atomic_json_dump(results, args.out)
    print_table(results)
    print(f"\nwrote {args.out} ({results['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
