"""SDFT's training step vs a naive fine-tuning step (λ = λ' = 0) on the same model and batch (issue #9).

Both steps are :func:`diffedit_lab.methods.sdft.losses.sdft_loss` + backward + AdamW on the same student
architecture from the same weights, with the same x₀, t and ε; the SDFT step also runs the frozen teacher on
[x_t; ε] and the student on the doubled batch. The arithmetic floor of the ratio is about 2.7× (two student passes
with backward plus two teacher passes, against one student pass with backward).

``tiny``: the learned-σ tiny pixel U-Net at 32 px on the CPU (batch 2). ``real`` (CUDA): a randomly initialised
U-Net with the shapes of SDFT's source model (the light ADM FFHQ-256, learned σ) at 256 px, per-GPU batch 8
(global 16 with 2 accumulation steps), bf16 autocast for the student, an fp16 teacher — as ``experiment=sdft_metfaces``.

    python -m experiments.bench.sdft [--sizes tiny|real|all] [--repeats N]
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
from typing import Any

import torch

from experiments.bench.harness import SEED, Bench, suite_parser, suite_sizes
from experiments.bench.models import n_params

BATCH = {"tiny": 2, "real": 8}
LAMBDAS = dict(lambda_distill=0.1, gamma_distill=3.0, lambda_aux=0.1, gamma_aux=50.0)  # MetFaces


def build_student(size: str, device: torch.device, checkpointing: bool = False):
    """The trainable student (fp32): tiny learned-σ U-Net, or ADM-FFHQ-256-shaped random weights."""
    from diffedit_lab.testing.priors import random_unet_prior, tiny_unet_prior

    if size == "tiny":
        return tiny_unet_prior(learned_variance=True, seed=SEED, trainable=True, device=device)
    from diffedit_lab.models.adm_convert import ADMConfig, scheduler_config, unet2d_config

    adm = ADMConfig()
    sched = {k: v for k, v in scheduler_config(adm).items() if not k.startswith("_")}
    return random_unet_prior(
        unet2d_config(adm),
        scheduler=sched,
        seed=SEED,
        trainable=True,
        device=device,
        gradient_checkpointing=checkpointing,
    )


def build_teacher(student, device: torch.device):
    """The frozen source: a copy of the student's initial weights, fp16 on CUDA (``teacher_dtype=auto``)."""
    from diffedit_lab.diffusion.priors import UnconditionalPrior, resolve_dtype

    unet = copy.deepcopy(student.unet)
    return UnconditionalPrior(unet, student.scheduler, dtype=resolve_dtype("auto", device), device=device)


class Step:
    """One optimiser step of the SDFT loss with ``cfg`` on its own copy of the student."""

    def __init__(self, student, teacher, cfg, x0, t, eps, autocast: bool) -> None:
        from diffedit_lab.methods.sdft.losses import PosteriorTable

        self.student = copy.deepcopy(student)
        self.teacher, self.cfg, self.x0, self.t, self.eps = teacher, cfg, x0, t, eps
        self.table = PosteriorTable(student.scheduler.betas)
        self.opt = torch.optim.AdamW(self.student.unet.parameters(), lr=2e-5, weight_decay=0.0)
        self.autocast = autocast

    def loss(self) -> torch.Tensor:
        from diffedit_lab.methods.sdft.losses import sdft_loss

        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with ctx:
            return sdft_loss(self.student, self.teacher, self.x0, self.eps, self.t, self.cfg, self.table).total

    def __call__(self) -> torch.Tensor:
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def bench_sdft(
    bench: Bench, size: str, device: torch.device, batch: int | None = None, checkpointing: bool = False
) -> dict[str, Any]:
    """Times ``train.sdft_step`` and ``train.naive_step``; returns the setting and a consistency check: from the
    initial state (student = teacher) the distillation terms vanish, so both losses agree."""
    from diffedit_lab.methods.sdft.config import LossConfig
    from diffedit_lab.utils.config import method_settings

    torch.manual_seed(SEED)
    student = build_student(size, device, checkpointing)
    teacher = build_teacher(student, device)
    b, res = batch or BATCH[size], student.image_size
    g = torch.Generator().manual_seed(SEED)
    x0 = (torch.rand(b, 3, res, res, generator=g) * 2 - 1).to(device)
    eps = torch.randn(b, 3, res, res, generator=g).to(device)
    t = torch.randint(0, student.num_train_timesteps, (b,), generator=g).to(device)
    autocast = device.type == "cuda"
    loss = functools.partial(method_settings, LossConfig, "sdft", "loss")  # conf/method/sdft.yaml's + overrides
    sdft = Step(student, teacher, loss(**LAMBDAS), x0, t, eps, autocast)
    naive = Step(student, None, loss(lambda_distill=0.0, lambda_aux=0.0), x0, t, eps, autocast)
    with torch.no_grad():
        check = {"loss_sdft": float(sdft.loss()), "loss_naive": float(naive.loss())}
    extra = {"batch": b, "resolution": res, "trainable_params": n_params(student.unet), "autocast_bf16": autocast,
             "gradient_checkpointing": checkpointing}  # fmt: skip
    bench.measure(size, device, {"train.sdft_step": (sdft, extra), "train.naive_step": (naive, extra)})
    del sdft, naive, student, teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**extra, **check}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = suite_parser(__doc__, "per-device batch (default: tiny 2, real 8)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="student U-Net with checkpointing")
    args = p.parse_args(argv)
    sizes = suite_sizes(args.sizes)
    bench = Bench(args.repeats, args.warmup)
    info = {}
    for size in sizes:
        device = torch.device("cpu" if size == "tiny" else "cuda")
        info[size] = bench_sdft(bench, size, device, args.batch, args.gradient_checkpointing)
        info[size]["ratio"] = bench.median("train.sdft_step", size) / bench.median("train.naive_step", size)
        peaks = {e["name"]: e.get("peak_cuda_mem_mb") for e in bench.entries if e["size"] == size}
        info[size]["peak_cuda_mem_mb"] = peaks
        print(f"  sdft/naive step ratio ({size}): {info[size]['ratio']:.2f}x; peak CUDA MB: {peaks}", flush=True)
    return {"measurements": bench.entries, "sdft": info}


if __name__ == "__main__":
    main(sys.argv[1:])
