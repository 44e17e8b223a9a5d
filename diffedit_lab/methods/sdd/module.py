"""SDD (Wang et al., "Not All Steps are Created Equal", 2023) as a LightningModule.

A StyleGAN2 generator G is frozen; a levels mapper M edits W+ codes, ``w' = w + 0.1·M(w)``. Stable Diffusion
supervises M through score distillation at timesteps chosen by the ``select`` stage:

    L = λ_sds · SDS(G(w'), t, prompt) + λ_l2 · MSE(w, w') + λ_id · (1 − cos(ArcFace(G(w)), ArcFace(G(w'))))

The identity term compares the ORIGINAL image G(w) with the EDITED image G(w'). (The released reference code
compares the original image with itself, which makes the term a constant; this is the corrected version.)
At inference an edit costs one mapper and one generator pass.

Stages: ``select`` (``scan.py``) → ``fit`` (here) → ``edit`` / ``eval`` (``inference.py``, predict loop).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from diffedit_lab.diffusion.score_distillation import ScoreDistillation
from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.preflight import Preflight, preflight_data
from diffedit_lab.methods.sdd import codes, inference, scan
from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.methods.sdd.config import SDDConfig
from diffedit_lab.methods.sdd.weights import EXPORT, load_mapper, save_mapper
from diffedit_lab.methods.stage import Stage, StageContext
from diffedit_lab.models.mapper import LevelsMapper
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate

log = logging.getLogger(__name__)


class SDDModule(EditingMethod):
    Config = SDDConfig
    EDIT_STAGE = "edit"
    STAGES = (
        Stage("select", distributed=True, needs=("teacher", "generator")),
        Stage("fit", train=True, needs=("teacher", "generator"), outputs=(EXPORT,), product="SDD mapper"),
        Stage("edit", needs=("generator",), uses="fit"),
        Stage("eval", needs=("generator", "clip"), uses="fit"),
    )

    @classmethod
    def check_select(cls, cfg: SDDConfig, pre: Preflight) -> None:
        """The scanned timesteps exist for the teacher (its T, read from its scheduler config, no weights)."""
        shape = pre.prior_shape(cfg.teacher)
        bad = [t for t in cfg.selection.timesteps if shape is not None and t >= shape.num_train_timesteps]
        if bad:
            raise UserError(
                f"method.selection.timesteps={list(cfg.selection.timesteps)}: {bad} not below the teacher's "
                f"T={shape.num_train_timesteps}"
            )

    @classmethod
    def check_fit(cls, cfg: SDDConfig, pre: Preflight) -> None:
        rule = cfg.selection.rule
        if sel.needs_scan(rule) or cfg.selection.always_scan:
            cls.check_select(cfg, pre)
        shape = pre.prior_shape(cfg.teacher)
        if rule.startswith("fixed_") and shape is not None and rule[6:].isdigit():
            if int(rule[6:]) >= shape.num_train_timesteps:
                raise UserError(
                    f"method.selection.rule={rule}: expected t < {shape.num_train_timesteps} (the teacher's T)"
                )
        if rule == "random" and shape is not None and cfg.selection.random_range[1] >= shape.num_train_timesteps:
            raise UserError(
                f"method.selection.random_range={list(cfg.selection.random_range)}: expected timesteps < "
                f"{shape.num_train_timesteps} (the teacher's T)"
            )

    @classmethod
    def check_edit(cls, cfg: SDDConfig, pre: Preflight) -> None:
        if cfg.edit.photos:  # the photos edit also inverts: its folder, names and lists must be there now
            preflight_data(cfg.edit.photos, "method.edit.photos")

    @classmethod
    def check_eval(cls, cfg: SDDConfig, pre: Preflight) -> None:
        """FID/KID against ``eval.reference_dir``: the folder holds images now (listed, none read)."""
        if cfg.eval.reference_dir and not cfg.eval.folder.pred:
            from diffedit_lab.evaluation.folder_eval import list_images

            try:
                list_images(cfg.eval.reference_dir, "reference")
            except UserError as exc:
                raise UserError(f"method.eval.reference_dir={cfg.eval.reference_dir}: {exc}") from None

    def __init__(self, cfg: SDDConfig):
        super().__init__(cfg)
        m = self.cfg.mapper
        self.mapper = LevelsMapper(
            dim=int(self.cfg.generator.get("style_dim", 512)),
            levels=dict(m.levels),
            num_layers=m.num_layers,
            lr_mul=m.lr_mul,
            edit_scale=m.edit_scale,
        )
        self.selection: sel.Selection | None = None

    # --- frozen components ------------------------------------------------------------------------------------
    @property
    def generator(self):
        return self.component("generator", self.cfg.generator)

    @property
    def teacher(self):
        return self.component("teacher", self.cfg.teacher)

    @property
    def sds(self) -> ScoreDistillation:
        if "sds" not in self._frozen:
            g = self.cfg.guidance
            self._frozen["sds"] = ScoreDistillation(
                self.teacher, guidance_scale=g.guidance_scale, weighting=g.weighting, topk=g.topk, noise=g.noise
            )
        return self._frozen["sds"]

    # --- codes and images -------------------------------------------------------------------------------------
    def codes_from_batch(self, batch: dict) -> torch.Tensor:
        """W+ codes (B, L, D): given in the batch, or mapped from integer seeds through the generator."""
        if "w" in batch:
            w = batch["w"].to(self.device).float()
            gen = self.generator
            if w.shape[1:] != (gen.n_latent, gen.style_dim):
                raise UserError(
                    f"W+ codes have shape {tuple(w.shape[1:])} but the generator expects "
                    f"({gen.n_latent}, {gen.style_dim})"
                )
            return w
        seeds = [int(s) for s in batch["seed"]]
        with torch.no_grad():
            return self.generator.sample_wplus(
                seeds, truncation=self.cfg.codes.truncation, truncation_latent=self.w_avg
            )

    @property
    def w_avg(self) -> torch.Tensor:
        """The truncation centre: the checkpoint's ``latent_avg``, else the mean of 4096 mapped z (computed once)."""
        if self._frozen.get("w_avg") is None or self._frozen["w_avg"].device != self.device:
            gen = self.generator
            avg = gen.latent_avg if gen.latent_avg is not None else gen.mean_latent(4096)
            self._frozen["w_avg"] = avg.reshape(1, -1).to(self.device)
        return self._frozen["w_avg"]

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesis(w, noise_mode="const")

    def edit_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Codes (``w``, or ``seed`` through the mapping network) → ``original``/``edited``; photos (``image``) are
        first inverted by the projector → ``input``/``inverted``/``edited`` (+ the codes, ``codes``)."""
        if "image" not in batch:
            before, after, _ = self.edit_codes(self.codes_from_batch(batch))
            return {"original": before, "edited": after}
        from diffedit_lab.models.projector import project

        images = batch["image"].to(self.device).float()
        size = getattr(self.generator, "output_size", None)
        if size is not None and tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        with torch.enable_grad():
            w = project(self.generator, images, steps=self.cfg.edit.projector_steps, lr=self.cfg.edit.projector_lr,
                        progress=False)  # fmt: skip
        recon, edited, _ = self.edit_codes(w)
        return {"input": images, "inverted": recon, "edited": edited, "codes": w}

    @torch.no_grad()
    def edit_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(original image, edited image, edited codes) — the method's one-pass inference."""
        w_edit = self.mapper.edit(w)
        return self.synthesize(w), self.synthesize(w_edit), w_edit

    # --- stages -----------------------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, ctx: StageContext) -> None:
        if not (stage.name == "eval" and self.cfg.eval.folder.pred):
            codes.use_codes(self, ctx)  # an image dataset → its inverted W+ codes (cached)
        super().run_stage(stage, ctx)

    def stage_select(self, ctx: StageContext) -> dict[str, float] | None:
        self.selection = scan.run_select(self, ctx)

    def ensure_selection(self, ctx: StageContext) -> sel.Selection:
        if self.selection is None:
            if sel.needs_scan(self.cfg.selection.rule) and scan.load_cached_table(self, ctx) is None:
                log.info("no timestep scores cached for this prompt/teacher/generator: running stage select")
            self.selection = scan.run_select(self, ctx)
        return self.selection

    def stage_fit(self, ctx: StageContext) -> dict[str, float]:
        self.ensure_selection(ctx)
        metrics = self.run_training(ctx, self.cfg.fit)
        save_mapper(self, ctx.run_dir / EXPORT)
        self.mark_trained("fit")
        ctx.write_metrics(metrics)
        return metrics

    def stage_edit(self, ctx: StageContext) -> dict[str, float]:
        self.ensure_used(ctx)
        return inference.run_edit(self, ctx)

    def stage_eval(self, ctx: StageContext) -> dict[str, float]:
        if self.scores_folder(self.stage, self.cfg):
            return self.evaluate_folder(ctx, self.cfg.eval.folder)
        self.ensure_used(ctx)
        return inference.run_eval(self, ctx)

    def load_trained(self, path: Path, train_stage: str = "fit") -> None:
        load_mapper(self, path)

    # --- training ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return instantiate(self.cfg.optim)(params=self.mapper.parameters())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.selection is None:
            raise UserError("SDD fit needs a timestep selection: run stage select (or use rule=fixed_T/random)")
        w = self.codes_from_batch(batch)
        w_edit = self.mapper.edit(w)
        x_edit = self.synthesize(w_edit)
        weighted = self.cfg.fit.t_sampling == "weighted"
        t = self.selection.sample(w.shape[0], self.rng("t"), weighted=weighted).to(self.device)
        out = self.sds(
            x_edit, t, self.cfg.prompt.text, self.cfg.guidance.negative_prompt, generator=self.rng("noise", self.device)
        )
        lw = self.cfg.loss
        loss_l2 = F.mse_loss(w_edit, w)
        loss = lw.sds * out.loss + lw.latent_l2 * loss_l2
        logs = {
            "train/sds": out.loss.detach(),
            "train/latent_l2": loss_l2.detach(),
            "train/t": t[0].float(),
            "train/noise_mse": out.noise_mse,
        }
        identity = self.identity if lw.identity > 0 else None
        if identity is not None:
            with torch.no_grad():
                x_orig = self.synthesize(w)
            loss_id = identity.loss(x_orig, x_edit)
            loss = loss + lw.identity * loss_id
            logs["train/identity"] = loss_id.detach()
        if not torch.isfinite(loss):
            raise UserError(
                f"non-finite loss at step {self.global_step} ({ {k: float(v) for k, v in logs.items()} });"
                " training stopped, the last good checkpoint is kept in checkpoints/fit/"
            )
        logs["train/loss"] = loss.detach()
        self.log_dict(logs, prog_bar=True, batch_size=w.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite gradient (e.g. from the fp16 teacher) reaches the weights or a checkpoint."""
        for name, p in self.mapper.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise UserError(
                    f"non-finite gradient in mapper.{name} at step {self.global_step}; training stopped, the last "
                    "good checkpoint is kept in checkpoints/fit/ (try a lower lr or prior.dtype=fp32)"
                )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.selection is not None:
            checkpoint["sdd_selection"] = self.selection.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("sdd_selection"):
            self.selection = sel.Selection.from_dict(checkpoint["sdd_selection"])

    @torch.no_grad()
    def preview_images(self) -> dict[str, torch.Tensor]:
        """Before/after rows on fixed codes, for the image-grid callback."""
        n = self.cfg.fit.preview_codes
        seeds = list(range(10_000_000, 10_000_000 + n))
        w = self.generator.sample_wplus(seeds, truncation=self.cfg.codes.truncation, truncation_latent=self.w_avg)
        before, after, _ = self.edit_codes(w)
        return {"before_after": torch.cat([before, after])}
