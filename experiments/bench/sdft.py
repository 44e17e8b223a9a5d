"""SDFT's training step vs a naive fine-tuning step (λ = λ' = 0) on the same model and batch (issue #9).

Both steps are :func:`diffedit_lab.methods.sdft.losses.sdft_loss` + backward + AdamW + the EMA update (as
``SDFTModule.optimizer_step``) on the same student architecture from the same weights, with the same x₀, t and ε;
the SDFT step also runs the student on the auxiliary input ε and the frozen teacher on x_t and ε. It is timed in
both ``loss.student_batching`` modes: ``joint`` (one student call on the doubled batch [x_t; ε], one teacher call
on the same) and ``separate`` (two student calls, one backward; two teacher calls) — the same math. The arithmetic
floor of the ratio is about 2.7× (two student passes with backward plus two teacher passes, against one student
pass with backward).

``tiny``: the learned-σ tiny pixel U-Net at 32 px on the CPU (batch 2). ``real`` (CUDA): a randomly initialised
U-Net with the shapes of SDFT's source model (the light ADM FFHQ-256, learned σ) at 256 px, per-GPU batch 8
(global 16 with 2 accumulation steps), bf16 autocast for the student, an fp16 teacher — as ``experiment=sdft_metfaces``.
``make bench-real`` without a GPU runs the real shapes on the CPU in fp32 at batch 1 and 2, and at batch 1 also
times the parts of a step (``parts=True``: student forward+backward on one input / on the pair, jointly and
separately; teacher forward on one / two inputs; AdamW; EMA), so that what a step costs beyond its parts shows.

    python -m experiments.bench.sdft [--sizes tiny|real|all] [--device cpu|cuda] [--batch N] [--parts] [--repeats N]
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
from typing import Any

import torch

from experiments.bench.harness import (
    SEED,
    Bench,
    real_device,
    retain_cpu_memory,
    suite_parser,
    suite_sizes,
    write_results,
)
from experiments.bench.models import n_params

BATCH = {"tiny": 2, "real": 8}
LAMBDAS = dict(lambda_distill=0.1, gamma_distill=3.0, lambda_aux=0.1, gamma_aux=50.0)  # MetFaces
MODES = ("joint", "separate")  # loss.student_batching, both timed
EMA_DECAY = 0.9999


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

    unet = copy.deepcopy(student.unet).requires_grad_(False)
    return UnconditionalPrior(unet, student.scheduler, dtype=resolve_dtype("auto", device), device=device)


class Trainee:
    """The trained copy of the student with its AdamW and EMA, shared by every step and part timed together: what a
    step costs does not depend on the values of the weights, and one copy (instead of one per step) keeps a
    real-size CPU run within memory (each copy is weights + gradients + two AdamW moments + the EMA: 1.9 GB)."""

    def __init__(self, student) -> None:
        from diffedit_lab.methods.sdft.ema import make_ema

        self.student = copy.deepcopy(student)
        self.params = list(self.student.unet.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=2e-5, weight_decay=0.0)
        self.ema = make_ema(self.student.unet, EMA_DECAY)


class Step:
    """One optimiser step of the SDFT loss with ``cfg`` on the trainee: loss, backward, AdamW and the EMA update,
    as ``SDFTModule`` trains."""

    def __init__(self, trainee: Trainee, teacher, cfg, x0, t, eps, autocast: bool) -> None:
        from diffedit_lab.methods.sdft.losses import PosteriorTable

        self.trainee, self.student = trainee, trainee.student
        self.teacher, self.cfg, self.x0, self.t, self.eps = teacher, cfg, x0, t, eps
        self.table = PosteriorTable.from_scheduler(self.student.scheduler)
        self.autocast = autocast

    def loss(self) -> torch.Tensor:
        from diffedit_lab.methods.sdft.losses import sdft_loss

        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with ctx:
            return sdft_loss(self.student, self.teacher, self.x0, self.eps, self.t, self.cfg, self.table).total

    def __call__(self) -> torch.Tensor:
        loss = self.loss()
        self.trainee.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.trainee.opt.step()
        self.trainee.ema.update_parameters(self.student.unet)
        return loss


def step_parts(trainee: Trainee, teacher, x0, t, eps, autocast: bool) -> dict[str, Any]:
    """The parts of a step, each a callable on the trainee (``train.sdft_part.*``): student forward + backward on
    x_t alone (= the naive step's network cost), on [x_t; ε] in one call, on x_t and ε in two calls with one
    backward; teacher forward on x_t alone and on [x_t; ε]; AdamW; the EMA update."""
    s, params, opt = trainee.student, trainee.params, trainee.opt
    pair, t2 = torch.cat([x0, eps]), torch.cat([t, t])
    ctx = functools.partial(torch.autocast, "cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext

    def backward(*outs: torch.Tensor) -> None:
        for p in params:
            p.grad = None
        sum(o.float().square().mean() for o in outs).backward()

    def student_one():
        with ctx():
            out = s.forward_raw(x0, t)
        backward(out)

    def student_joint():
        with ctx():
            out = s.forward_raw(pair, t2)
        backward(out)

    def student_separate():
        with ctx():
            outs = s.forward_raw(x0, t), s.forward_raw(eps, t)
        backward(*outs)

    @torch.no_grad()
    def teacher_one():
        return teacher.predict_eps(x0, t)

    @torch.no_grad()
    def teacher_pair():
        return teacher.predict_eps(pair, t2)

    def adamw():
        if params[0].grad is None:  # a step ran last and zeroed them: gradients to step on
            student_one()
        opt.step()

    return {
        "train.sdft_part.student_fwd_bwd.one": student_one,
        "train.sdft_part.student_fwd_bwd.joint": student_joint,
        "train.sdft_part.student_fwd_bwd.separate": student_separate,
        "train.sdft_part.teacher_fwd.one": teacher_one,
        "train.sdft_part.teacher_fwd.joint": teacher_pair,
        "train.sdft_part.adamw": adamw,
        "train.sdft_part.ema_update": lambda: trainee.ema.update_parameters(s.unet),
    }


def breakdown(bench: Bench, size: str, batch: int) -> dict[str, float]:
    """Where a step's time goes (medians, ms): each step against the sum of its parts (``beyond_parts``: loss
    math, zero_grad, allocation — everything not in a part)."""
    m = functools.partial(bench.median, size=size, batch=batch)
    part = {k: m(f"train.sdft_part.{k}") for k in ("student_fwd_bwd.one", "student_fwd_bwd.joint",
            "student_fwd_bwd.separate", "teacher_fwd.one", "teacher_fwd.joint", "adamw", "ema_update")}  # fmt: skip
    common = part["adamw"] + part["ema_update"]
    sums = {
        "naive": part["student_fwd_bwd.one"] + common,
        "joint": part["student_fwd_bwd.joint"] + part["teacher_fwd.joint"] + common,
        "separate": part["student_fwd_bwd.separate"] + 2 * part["teacher_fwd.one"] + common,
    }
    steps = {"naive": m("train.naive_step"), **{mode: m(f"train.sdft_step.{mode}") for mode in MODES}}
    return {
        **{f"part.{k}": v for k, v in part.items()},
        **{f"parts_sum.{k}": v for k, v in sums.items()},
        **{f"beyond_parts.{k}": steps[k] - sums[k] for k in steps},
        "student_pair_joint_over_one": part["student_fwd_bwd.joint"] / part["student_fwd_bwd.one"],
        "student_pair_separate_over_one": part["student_fwd_bwd.separate"] / part["student_fwd_bwd.one"],
        "teacher_pair_joint_over_one": part["teacher_fwd.joint"] / part["teacher_fwd.one"],
        # the floor: both student passes + both teacher passes, against one student pass (+ the optimiser both)
        "floor_ratio": (2 * part["student_fwd_bwd.one"] + 2 * part["teacher_fwd.one"] + common) / sums["naive"],
    }


def bench_sdft(
    bench: Bench,
    size: str,
    device: torch.device,
    batch: int | None = None,
    checkpointing: bool = False,
    parts: bool = False,
    repeats: int | None = None,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Times ``train.sdft_step.joint``, ``train.sdft_step.separate`` and ``train.naive_step`` interleaved (with
    ``parts``: also the ``train.sdft_part.*`` entries of :func:`step_parts`); returns the setting, the ratios to
    the naive step, the default mode (``conf/method/sdft.yaml``), and a consistency check: from the
    initial state (student = teacher) the distillation terms vanish, so every loss agrees."""
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
    trainee = Trainee(student)
    steps = {m: Step(trainee, teacher, loss(**LAMBDAS, student_batching=m), x0, t, eps, autocast) for m in MODES}
    naive = Step(trainee, None, loss(lambda_distill=0.0, lambda_aux=0.0), x0, t, eps, autocast)
    dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in student.unet.modules())
    with torch.no_grad():  # dropout (the real ADM: 0.1) draws other masks per call: then only close, not equal
        check = {f"loss_sdft_{mode}": float(steps[mode].loss()) for mode in MODES} | {"loss_naive": float(naive.loss())}
    default = loss().student_batching
    check["loss_sdft"] = check[f"loss_sdft_{default}"]
    extra = {"batch": b, "resolution": res, "trainable_params": n_params(student.unet), "autocast_bf16": autocast,
             "gradient_checkpointing": checkpointing, "dtype": "bf16 autocast" if autocast else "fp32"}  # fmt: skip
    fns = {f"train.sdft_step.{mode}": (step, {**extra, "student_batching": mode}) for mode, step in steps.items()}
    fns["train.naive_step"] = (naive, extra)
    if parts:
        fns |= {name: (fn, extra) for name, fn in step_parts(trainee, teacher, x0, t, eps, autocast).items()}
    bench.measure(size, device, fns, repeats=repeats, warmup=warmup)
    info = {**extra, **check, "student_dropout": dropout, "default_mode": default}
    for key, stat in (("ratios_to_naive", "median_ms"), ("ratios_to_naive_min", "min_ms")):  # min: least contended
        naive_ms = bench.median("train.naive_step", size, b, stat)
        info[key] = {mode: bench.median(f"train.sdft_step.{mode}", size, b, stat) / naive_ms for mode in MODES}
    if parts:
        info["breakdown_ms"] = breakdown(bench, size, b)
    fns.clear()
    del steps, naive, trainee, student, teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = suite_parser(__doc__, "per-device batch (default: tiny 2, real 8)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="student U-Net with checkpointing")
    p.add_argument("--parts", action="store_true", help="also time the parts of a step (train.sdft_part.*)")
    args = p.parse_args(argv)
    sizes = suite_sizes(args.sizes, args.device)
    malloc = retain_cpu_memory() if args.device == "cpu" and args.cpu_malloc == "retain" else "default"
    bench = Bench(args.repeats, args.warmup)
    info = {}
    for size in sizes:
        device = torch.device("cpu") if size == "tiny" else real_device(args.device)
        info[size] = bench_sdft(bench, size, device, args.batch, args.gradient_checkpointing, args.parts)
        info[size]["cpu_malloc"] = malloc if device.type == "cpu" else None
        peaks = {e["name"]: e.get("peak_cuda_mem_mb") for e in bench.entries if e["size"] == size}
        info[size]["peak_cuda_mem_mb"] = peaks
        r = {k: round(v, 2) for k, v in info[size]["ratios_to_naive"].items()}
        print(f"  sdft/naive step ratio ({size}): {r} (default {info[size]['default_mode']}); peak CUDA MB: {peaks}")
        if "breakdown_ms" in info[size]:
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in info[size]["breakdown_ms"].items()), flush=True)
    results = {"measurements": bench.entries, "sdft": info}
    if args.out:
        write_results(results, args.out)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
