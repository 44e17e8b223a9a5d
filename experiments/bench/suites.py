"""The benchmark groups, each timing one question (see README.md for what every entry means):

1. :func:`bench_core` -- per-call cost of the diffusion core (CFG ε, VAE encode, an SDS step, a pixel-prior ε);
2. :func:`bench_edit` -- SDD's one-pass edit vs SDEdit of the same image with the same prior family;
3. :func:`bench_train` / :func:`bench_trainer` -- an SDD training step through the framework (Hydra-composed module,
   and inside ``Trainer.fit``) vs the same step in bare PyTorch (:class:`BareSDDStep`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from experiments.bench.harness import SEED, Bench, device_name, summary, sync
from experiments.bench.models import n_params

PROMPT = "a photo of a smiling face"
T_PROBE = 500  # timestep for the per-call prior measurements
SDEDIT_STEPS, SDEDIT_STRENGTH, SDEDIT_CFG = 50, 0.5, 7.5
TRAIN_BATCH = 2
TRAIN_RULE = "fixed_500"


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
        "params_unet": n_params(sd.unet),
        "params_vae": n_params(sd.vae),
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
                    "params_unet": n_params(uncond.unet),
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
                    "params": n_params(gen, mapper),
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


def compose_sdd_real(out_dir: Path, extra: list[str] = ()):
    """``method=sdd`` with its real settings (guidance 100, top-k 1024, λ_l2 10, the medium-level mapper; identity
    off: the bare loop does not implement it), its generator and teacher swapped for random-weight builders of the
    real shapes: StyleGAN2 config-f 1024 and SD v1.4 at 512 px (``dtype: auto``: fp16 on CUDA, fp32 on the CPU)."""
    from omegaconf import OmegaConf, open_dict

    from diffedit_lab.utils.config import compose_config
    from experiments.bench.models import SD14_SCHEDULER, SD14_TEXT, SD14_UNET, SD14_VAE, STYLEGAN2_F_1024

    cfg = compose_config(
        [
            "method=sdd",
            "logger=none",
            "callbacks=none",
            f"paths.output_dir={out_dir}",
            f"paths.cache_dir={out_dir / 'cache'}",
            "method.loss.identity=0",
            *extra,
        ]
    )
    plain = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # noqa: E731
    with open_dict(cfg):
        domain = cfg.generator.get("domain", "any")
        cfg.generator = OmegaConf.create(
            {
                "_target_": "diffedit_lab.testing.stylegan2.random_generator",
                **STYLEGAN2_F_1024,
                "seed": SEED,
                "domain": domain,
            }  # fmt: skip
        )
        cfg.prior = OmegaConf.create(
            {
                "_target_": "diffedit_lab.testing.priors.random_sd_prior",
                "unet": plain(SD14_UNET),
                "vae": plain(SD14_VAE),
                "text": plain(SD14_TEXT),
                "image_size": 512,
                "scheduler": plain(SD14_SCHEDULER),
                "tokenizer_max_length": 77,
                "seed": SEED,
                "dtype": "auto",
            }  # fmt: skip
        )
    return cfg


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

    def loss(self, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        w_edit = w + self.edit_scale * self.mapper(w)
        x = self.gen.synthesis(w_edit, noise_mode="const")
        if x.shape[-2:] != (self.res, self.res):
            x = F.interpolate(x, (self.res, self.res), mode="bilinear", align_corners=False)
        dtype = self.unet.dtype  # the teacher's precision (fp16 on CUDA); the SDS arithmetic in fp32
        z = (self.vae.encode(x.to(dtype)).latent_dist.sample(generator=generator) * self.sf).float()
        # not randn_like: z is a strided view
        eps = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
        a = self.abar[self.t].view(-1, 1, 1, 1)
        with torch.no_grad():
            z_t = a.sqrt() * z + (1 - a).sqrt() * eps
            t2 = torch.cat([self.t, self.t])
            out = self.unet(torch.cat([z_t, z_t]).to(dtype), t2, encoder_hidden_states=self.emb).sample.float()
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


def bench_train(
    bench: Bench,
    device: torch.device,
    work_dir: Path,
    size: str = "tiny",
    batch_size: int = TRAIN_BATCH,
    repeats: int | None = None,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Framework (Hydra-composed SDDModule.training_step + backward + its AdamW) vs :class:`BareSDDStep`, same
    models, codes, t and seeds: the tiny models of ``experiment=demo``, or (``size="real"``) ``method=sdd``'s real
    settings on random StyleGAN2-1024 + SD v1.4 (:func:`compose_sdd_real`). Returns a consistency check: both
    first-step losses from one state."""
    from diffedit_lab.methods.sdd import selection as sel
    from diffedit_lab.run import build_method

    cfg = compose_sdd(work_dir) if size == "tiny" else compose_sdd_real(work_dir)
    torch.manual_seed(SEED)
    module = build_method(cfg.method).to(device)
    module.selection = sel.select(TRAIN_RULE)
    gen, sd = module.generator, module.teacher
    with torch.no_grad():
        trunc = float(cfg.method.codes.truncation)
        w = gen.sample_wplus(list(range(batch_size)), truncation=trunc).to(device)
    t = module.selection.timesteps[0]
    bare_mapper = copy.deepcopy(module.mapper)
    bare = BareSDDStep(bare_mapper, gen, sd, cfg.method, t=t, batch=batch_size)
    opt = module.configure_optimizers()
    batch = {"w": w, "index": torch.arange(batch_size)}

    def framework_loss():
        return module.training_step(batch, 0)

    def framework_step():
        loss = framework_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    # Same math? First losses from identical mapper weights and noise stream (the module draws its noise from
    # its checkpointed stream `rng("noise")`, the bare step from an equally seeded generator).
    module.rng("noise", device).manual_seed(SEED)
    loss_fw = float(framework_loss().detach())
    loss_bare = float(bare.loss(w, torch.Generator(device=device).manual_seed(SEED)).detach())
    check = {"loss_framework": loss_fw, "loss_bare": loss_bare, "abs_diff": abs(loss_fw - loss_bare)}

    info = {
        "batch": batch_size,
        "t": t,
        "resolution": gen.size,
        "teacher_resolution": sd.image_size,
        "teacher_dtype": str(sd.dtype).removeprefix("torch."),
        "guidance_scale": float(cfg.method.guidance.guidance_scale),
        "topk": cfg.method.guidance.topk,
        "lambda_l2": float(cfg.method.loss.latent_l2),
        "trainable_params": n_params(module.mapper),
    }
    config = "experiment=demo" if size == "tiny" else "method=sdd, random StyleGAN2-1024 + SD v1.4"
    bench.measure(
        size,
        device,
        {
            "train.sdd_step.framework": (
                framework_step,
                {
                    **info,
                    "note": f"hydra-composed SDDModule.training_step ({config}, identity off) + backward + AdamW",
                },
            ),
            "train.sdd_step.bare": (lambda: bare.step(w), {**info, "note": "the same step in plain PyTorch"}),
        },
        repeats=repeats,
        warmup=warmup,
    )
    return {**check, "batch": batch_size, "config": config}


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
            sync(device)
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(device)
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
        "device": device_name(device),
        "batch": TRAIN_BATCH,
        "t": module.selection.timesteps[0],
        "log_every_n_steps": int(cfg.trainer.log_every_n_steps),
        "note": "the framework step inside Trainer.fit (loop + closure + logging), per batch",
        **summary(timed, bench.warmup),
    }
    bench.add(entry)
