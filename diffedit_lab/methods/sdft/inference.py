"""SDFT's inference stages through Lightning's predict loop, all from the EMA model:

* ``sample``: DDIM (40 steps, η = 0 by default) from seeded noise — image i always starts from the noise of
  ``sample.seed + i``, whatever the batching — to PNGs and ``sample/grid.png``;
* ``translate``: SDEdit of source-domain images (``translate.source``, its test split): noise to ``strength`` of
  the DDIM schedule (the middle of 40 steps by default), denoise; PNGs, a source/translated grid and the paper's
  translation metrics (PSNR/SSIM/LPIPS vs the inputs, FID/KID vs the target set);
* ``eval``: the paper's protocols — generation (FID/KID of N samples vs the target set; LPIPS between samples of
  the source and of the fine-tuned model from the same initial noise, DDIM) and translation (as above, metrics only,
  once per method of ``eval.translation_methods``: ``eval/translation_sdedit/*``, ``eval/translation_egsde/*``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from lightning import Callback
from torch.utils.data import DataLoader, Subset

from diffedit_lab.callbacks.metrics import MetricsCallback
from diffedit_lab.callbacks.predictions import ImageWriter
from diffedit_lab.data.base import eval_batch_size, split_loader
from diffedit_lab.data.latents import SeedDataset
from diffedit_lab.diffusion import samplers
from diffedit_lab.methods.editing import edit_pass, item_names
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import save_grid
from diffedit_lab.utils.loggers import log_image_file

log = logging.getLogger(__name__)


def seeded_noise(seeds: Iterable[int], shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """One N(0, I) tensor of ``shape`` per seed (CPU generator: the same noise on every device)."""
    noise = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device)


class SampleGrid(Callback):
    """Keeps the first ``grid_max`` predicted ``images[key]`` and writes them as ``path`` at the end of the loop."""

    def __init__(self, path, key: str, columns: int, grid_max: int, log_key: str) -> None:
        self.path, self.key, self.columns, self.grid_max, self.log_key = path, key, columns, grid_max, log_key
        self.kept: list[torch.Tensor] = []
        self.names: list[str] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        room = self.grid_max - sum(len(x) for x in self.kept)
        if room > 0:
            self.kept.append(outputs["images"][self.key][:room].detach().float().cpu())
            self.names += list(outputs.get("names", []))[:room]

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.kept and trainer.is_global_zero:
            save_grid(torch.cat(self.kept), self.path, nrow=self.columns)
            n = sum(len(x) for x in self.kept)
            shown = f" {self.names[0]}…{self.names[-1]}" if self.names else ""
            caption = f"the first {n} {self.key} images{shown} (item order, rows of {self.columns})"
            log_image_file(trainer.loggers, self.log_key, self.path, trainer.global_step, caption)


def _image_shape(module) -> tuple[int, int, int]:
    s = module.student
    return (s.in_channels, s.image_size, s.image_size)


def _generate(module, prior, seeds, settings) -> torch.Tensor:
    """DDIM from the seeded noise of ``seeds`` with ``settings`` (steps, eta, clip_sample)."""
    x_T = seeded_noise(seeds, _image_shape(module), module.device)
    gen = torch.Generator(module.device).manual_seed(int(seeds[0])) if settings.eta > 0 else None
    return samplers.ddim_sample(
        prior, x_T, num_steps=settings.steps, eta=settings.eta, generator=gen, clip_sample=settings.clip_sample
    )


def run_sample(module, ctx: StageContext) -> dict[str, float]:
    s = module.cfg.sample
    module.ensure_trained(ctx)
    out = ctx.run_dir / "sample"
    writer = ImageWriter(out, name_format="{name}.png")
    grid = SampleGrid(out / "grid.png", "sample", s.grid_columns, s.grid_max, "sample/grid")

    @torch.no_grad()
    def step(batch: dict, batch_idx: int) -> dict:
        x = _generate(module, module.sampling_prior(ema=s.ema), [int(v) for v in batch["seed"]], s)
        return {"names": [f"{int(i):05d}" for i in batch["index"]], "images": {"sample": x}}

    loader = DataLoader(SeedDataset(s.seed, s.num_images), batch_size=s.batch_size, shuffle=False)
    module.run_predict(ctx, loader, step, callbacks=[writer, grid])
    metrics = {"sample/num_images": float(writer.count)}
    ctx.write_metrics(metrics)
    log.info("wrote %d samples to %s", writer.count, out)
    return metrics


def sample_quality(module, ctx: StageContext):
    """``fit``'s FID/KID of EMA samples every ``fit.fid_every`` steps in Lightning's validation loop: the scoring
    callback, ``ModelCheckpoint`` of ``checkpoints/fit/best.ckpt``, the training data with the seeds as validation
    loader, and the Trainer arguments (see :mod:`diffedit_lab.callbacks.sample_quality`)."""
    from diffedit_lab.callbacks.sample_quality import (
        SampleQuality,
        WithValidation,
        best_checkpoint,
        seeds_loader,
        validation_trainer_kwargs,
    )

    f, s = module.cfg.fit, module.cfg.sample
    scorer = SampleQuality(
        module.metric_suite(f.fid_metrics, module.cfg.eval, f.fid_images), feed_target(module, ctx), f.fid_monitor
    )
    data = WithValidation(ctx.datamodule, lambda: seeds_loader(module.cfg.eval.seed, f.fid_images, s.batch_size))
    kwargs = validation_trainer_kwargs(f.fid_every, ctx.trainer_cfg.get("accumulate_grad_batches") or 1)
    return scorer, best_checkpoint(ctx.checkpoint_dir("fit"), scorer.key), data, kwargs


@torch.no_grad()
def quality_samples(module, seeds: list[int]) -> torch.Tensor:
    """The samples ``fit`` scores: DDIM from the EMA (``sample.ema``) with ``fit.fid_steps`` (or ``sample.steps``)."""
    from dataclasses import replace

    f, s = module.cfg.fit, module.cfg.sample
    return _generate(module, module.sampling_prior(ema=s.ema), seeds, replace(s, steps=f.fid_steps or s.steps))


# --- translation --------------------------------------------------------------------------------------------
def source_loader(module, limit: int | None, batch_size: int) -> DataLoader:
    """The first ``limit`` images of the test split of ``translate.source`` (the source domain), in order."""
    node = module.cfg.translate.source
    if not node:
        raise UserError("SDFT translation needs source-domain images: set method.translate.source (e.g. data=ffhq)")
    dm = instantiate(node)
    if hasattr(dm, "preflight"):
        dm.preflight()
    return split_loader(dm, "test", limit, batch_size, "SDFT translation (method.translate.source)")


class TranslateSteps:
    """SDEdit (or EGSDE: SDEdit + the energy guidance of :mod:`.egsde`) of a batch of source images."""

    def __init__(self, module, settings, seed: int, classifier=None) -> None:
        self.module, self.s, self.seed, self.classifier = module, settings, seed, classifier

    @torch.no_grad()
    def __call__(self, batch: dict, batch_idx: int) -> dict:
        m, s = self.module, self.s
        x = batch["image"].to(m.device).float()
        gen = torch.Generator(m.device).manual_seed(self.seed + batch_idx)
        y = translate(m, s, x, gen, self.classifier)["translated"]
        return {
            "names": item_names(batch, len(x), 0),
            "images": {"source": x, "translated": y},
            "grid": (x, y),
            "metrics": {"paired": (y, x), "fake": y},
        }


def translate(module, s, x: torch.Tensor, gen: torch.Generator, classifier=None) -> dict[str, torch.Tensor]:
    """SDEdit (or EGSDE in the form ``egsde.form``) of source images ``x`` on the EMA (or raw student): the one
    translation the stage, the eval protocol and the pipeline share."""
    prior = module.sampling_prior(ema=s.ema)
    if s.method != "egsde":
        y = samplers.sdedit(prior, x, strength=s.strength, num_steps=s.steps, eta=s.eta, generator=gen)
        return {"source": x, "translated": y}
    from diffedit_lab.methods.sdft import egsde

    e = module.cfg.egsde
    steps, feats = e.steps or s.steps, classifier.features
    weights = (e.realism_weight, e.faithfulness_weight, e.downsample)
    if e.form == "official":
        y = egsde.egsde_sample(prior, x, feats, *weights, s.strength, steps, e.repeats, generator=gen)
    else:
        noise = torch.randn(x.shape, generator=gen, device=x.device)
        guidance = egsde.EGSDEGuidance(prior, x, noise, steps, feats, *weights)
        y = samplers.sdedit(prior, x, strength=s.strength, num_steps=steps, eta=s.eta, generator=gen,
                            step_callback=guidance)  # fmt: skip
    return {"source": x, "translated": y}


def feed_target(module, ctx: StageContext):
    """``feed_real`` for :class:`MetricsCallback`: the whole target split (``eval.target_split``) as real images —
    of ``eval.target`` when set (e.g. the whole AAHQ while training on a subset), else of the training data."""
    e = module.cfg.eval

    def feed(suite, device, rank: int = 0, world: int = 1) -> None:
        """``rank``/``world``: under DDP each rank feeds its share (the metric states are summed across ranks)."""
        if not suite.needs_real_images:
            return
        dm = instantiate(e.target) if e.target else ctx.datamodule
        if e.target and hasattr(dm, "preflight"):
            dm.preflight()
        dm.setup("fit")
        ds = dm.dataset(e.target_split)
        n = len(ds) if e.max_target_images is None else min(e.max_target_images, len(ds))
        if n < len(ds) or world > 1:
            ds = Subset(ds, range(rank, n, world))
        for batch in DataLoader(ds, batch_size=eval_batch_size(ctx.datamodule), shuffle=False):
            suite.update_unpaired_real(batch["image"].to(device))

    return feed


def translate_and_score(
    module, ctx, limit: int | None, metrics: Sequence[str], prefix: str, write: bool = False, method: str | None = None
) -> dict:
    """Translate the first ``limit`` source images (``translate`` settings; ``method`` overrides sdedit/egsde) and
    score them: paired metrics vs the inputs, FID/KID vs the target set — the shared edit pass with SDFT's source
    loader, translation step and target set (PNGs and ``<prefix>/grid.png`` when ``write``)."""
    from dataclasses import replace

    s = module.cfg.translate if method is None else replace(module.cfg.translate, method=method)
    loader = source_loader(module, limit, s.batch_size)
    classifier = module.domain_classifier(ctx) if s.method == "egsde" else None
    steps = TranslateSteps(module, s, s.seed, classifier)
    return edit_pass(module, ctx, prefix, s, metrics, write=write, loader=loader, step=steps,
                     feed_real=feed_target(module, ctx), record=False)  # fmt: skip


def check_egsde(module, method: str) -> None:
    """EGSDE's low-pass filter needs an image size its downsampling factor divides."""
    size, factor = module.student.image_size, module.cfg.egsde.downsample
    if method == "egsde" and size % factor:
        raise UserError(f"method.egsde.downsample={factor}: must divide the prior's image size {size}")


def run_translate(module, ctx: StageContext) -> dict[str, float]:
    s = module.cfg.translate
    module.ensure_trained(ctx)
    check_egsde(module, s.method)
    metrics = translate_and_score(module, ctx, s.max_images, module.cfg.eval.translation_metrics, "translate", True)
    ctx.write_metrics(metrics)
    return metrics


# --- eval ---------------------------------------------------------------------------------------------------
def run_eval(module, ctx: StageContext) -> dict[str, float]:
    e, s = module.cfg.eval, module.cfg.sample
    module.ensure_trained(ctx)
    metrics: dict[str, float] = {}
    if e.generation_images and e.generation_metrics:
        loader = DataLoader(SeedDataset(e.seed, e.generation_images), batch_size=s.batch_size, shuffle=False)
        suite = module.metric_suite(e.generation_metrics, module.cfg.eval, e.generation_images)
        scorer = MetricsCallback(suite, "eval/generation", feed_target(module, ctx))

        @torch.no_grad()
        def generate(batch: dict, batch_idx: int) -> dict:
            return {"metrics": {"fake": _generate(module, module.sampling_prior(ema=s.ema), batch["seed"], s)}}

        module.run_predict(ctx, loader, generate, callbacks=[scorer])
        metrics |= scorer.result
    if e.pair_images and e.pair_metrics:
        loader = DataLoader(SeedDataset(e.seed, e.pair_images), batch_size=s.batch_size, shuffle=False)
        scorer = MetricsCallback(module.metric_suite(e.pair_metrics, module.cfg.eval, e.pair_images), "eval/pairs")

        @torch.no_grad()
        def pairs(batch: dict, batch_idx: int) -> dict:
            seeds = [int(v) for v in batch["seed"]]
            tuned = _generate(module, module.sampling_prior(ema=s.ema), seeds, s)
            source = _generate(module, module.teacher, seeds, s)
            return {"metrics": {"paired": (tuned, source)}}

        module.run_predict(ctx, loader, pairs, callbacks=[scorer])
        metrics |= scorer.result
    if e.translation_images and e.translation_metrics:
        for method in e.translation_methods:  # Tab. 1: SDEdit and EGSDE rows of the same model
            check_egsde(module, method)
            prefix = f"eval/translation_{method}"
            metrics |= translate_and_score(
                module, ctx, e.translation_images, e.translation_metrics, prefix, False, method
            )
    ctx.write_metrics(metrics)
    log.info("eval: %s", {k: round(v, 5) for k, v in metrics.items()})
    return metrics
