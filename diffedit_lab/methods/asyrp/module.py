"""Asyrp (Kwon et al., "Diffusion Models Already Have a Semantic Latent Space", ICLR 2023) as a LightningModule.

A frozen unconditional prior (``method.prior``: any diffusers ``UNet2DModel`` — DDPM CelebA-HQ, the converted ADM
FFHQ, SDFT's exported EMA ``<run>/ema_unet`` …) is edited by shifting its bottleneck features h (:mod:`.hspace`)
during the editing interval of the reverse process, asymmetrically (:mod:`.process`). Only the small Δh network is
trained and checkpointed; the prior, CLIP and ArcFace are lazily built components.

Stages: ``fit`` (trajectories over the inverted training images, one SGD step per timestep, as the released code;
manual optimisation, so the Trainer's step counter counts those optimiser steps) → ``edit`` → ``eval``.

Reuse from another method (e.g. SDFT editing with its fine-tuned EMA)::

    asyrp = AsyrpModule.with_prior(method_node, prior)          # the given prior object is used as is
    sub = dataclasses.replace(ctx, run_dir=ctx.run_dir / "asyrp", metrics={})
    methods.stage.run_stages(asyrp, asyrp.STAGES, sub)   # checkpoints/, edit/, asyrp.safetensors inside sub.run_dir

or a nested run: ``method=asyrp prior.source=<sdft run>/ema_unet`` (any prior config with a ``source``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf

from diffedit_lab.diffusion.priors.shape import PriorShape
from diffedit_lab.methods.asyrp import pairs, process
from diffedit_lab.methods.asyrp.config import AsyrpConfig
from diffedit_lab.methods.asyrp.hspace import DeltaBlock, HSpaceShift, build_delta
from diffedit_lab.methods.asyrp.losses import asyrp_loss, text_cosine
from diffedit_lab.methods.asyrp.pairs import fit_images
from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.preflight import Preflight
from diffedit_lab.methods.stage import Stage, StageContext
from diffedit_lab.utils.artifacts import save_artifact
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.schema import validate
from diffedit_lab.utils.weights import load_state_into, load_weights

log = logging.getLogger(__name__)

EXPORT = "asyrp.safetensors"  # the trained Δh network (state dict + what it was trained with)


class AsyrpModule(EditingMethod):
    Config = AsyrpConfig
    EDIT_STAGE = "edit"
    STAGES = (
        Stage("fit", train=True, needs=("prior", "clip"), outputs=(EXPORT,), product="Asyrp h-space module"),
        Stage("edit", needs=("prior",), uses="fit"),
        Stage("eval", needs=("prior", "clip"), uses="fit"),
    )

    @classmethod
    def stage_needs(cls, stage: Stage, cfg: AsyrpConfig) -> tuple[str, ...]:
        if stage.name == "edit" and {"clip_dir", "clip_score"} & set(cfg.eval.metrics):
            return ("prior", "clip")  # edit also reports the metrics of what it wrote
        return super().stage_needs(stage, cfg)

    @classmethod
    def check_fit(cls, cfg: AsyrpConfig, pre: Preflight) -> None:
        if cfg.fit.batch_size > cfg.fit.num_images:
            raise UserError(
                f"method.fit.batch_size={cfg.fit.batch_size}: more than the {cfg.fit.num_images} training images "
                "(method.fit.num_images); lower it"
            )
        dm = pre.datamodule
        if cfg.fit.batch_size > 1 and dm is not None and hasattr(dm, "dataset"):  # fewer images than asked for
            available = min(cfg.fit.num_images, len(dm.dataset("train")))  # lists the split (idempotent setup)
            if cfg.fit.batch_size > available:
                raise UserError(
                    f"method.fit.batch_size={cfg.fit.batch_size}: more than the {available} training images (the "
                    "train split of data); lower it"
                )
        cls.check_prior(cfg, pre)

    @classmethod
    def check_edit(cls, cfg: AsyrpConfig, pre: Preflight) -> None:
        cls.check_prior(cfg, pre)

    @classmethod
    def check_eval(cls, cfg: AsyrpConfig, pre: Preflight) -> None:
        if not cfg.eval.folder.pred:
            cls.check_prior(cfg, pre)

    @classmethod
    def check_prior(cls, cfg: AsyrpConfig, pre: Preflight, shape: PriorShape | None = None) -> None:
        """What the prior's architecture decides, read without its weights: ``t_0`` within its T, the images at
        its size, a middle block to shift. ``shape``: a prior given as an object (SDFT's EMA), else ``cfg.prior``."""
        shape = shape or pre.prior_shape(cfg.prior)
        if shape is None:
            return
        T = shape.num_train_timesteps
        if cfg.schedule.t_0 >= T:
            raise UserError(f"method.schedule.t_0={cfg.schedule.t_0}: expected < {T} (the prior's T)")
        size = getattr(pre.datamodule, "size", None)
        if size is not None and tuple(size) != (shape.sample_size, shape.sample_size):
            raise UserError(
                f"images are {tuple(size)} but the prior takes {shape.sample_size}x{shape.sample_size}: set "
                f"data.resolution={shape.sample_size}"
            )
        if shape.unet_config.get("mid_block_type", "UNetMidBlock2D") is None:
            raise UserError("Asyrp needs a U-Net with a middle block (its h-space); this prior's UNet2DModel has none")

    @classmethod
    def with_prior(cls, node: DictConfig | dict | AsyrpConfig, prior) -> AsyrpModule:
        """An Asyrp module that edits with the given prior object (never loaded from ``node.prior``)."""
        if not isinstance(node, AsyrpConfig):
            node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
            if not (node.get("prior") or {}).get("_target_"):  # a description only: the object below is used
                node["prior"] = {"_target_": f"{type(prior).__module__}.{type(prior).__qualname__}"}
            node = validate(AsyrpConfig, node, "method")
        module = cls(node)
        prior.unet.eval()  # frozen and deterministic: no dropout in inversion, training or editing
        module._frozen["prior"] = prior
        return module

    def __init__(self, cfg: AsyrpConfig) -> None:
        super().__init__(cfg)
        self.automatic_optimization = False  # one optimiser step per timestep of a trajectory, as Asyrp
        self.delta: DeltaBlock | None = None
        self._train_pairs: list[tuple[int, int]] = []
        self._recon_weight: float | None = None
        self._batches_per_epoch = 1
        self._preview: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- components -------------------------------------------------------------------------------------------
    @property
    def prior(self):
        prior = self.component("prior", self.cfg.prior)
        if not (hasattr(prior, "unet") and hasattr(prior, "predict_eps") and hasattr(prior, "image_size")):
            raise UserError(f"method.prior must build a pixel-space UnconditionalPrior, got {type(prior).__name__}")
        if self.cfg.schedule.t_0 >= prior.num_train_timesteps:
            raise UserError(
                f"method.schedule.t_0={self.cfg.schedule.t_0}: expected < {prior.num_train_timesteps} (the prior's T)"
            )
        return prior

    def build_networks(self) -> None:
        """The Δh network, sized by the prior's bottleneck and seeded (``hspace.init_seed``). Idempotent."""
        if self.delta is not None:
            return
        from diffedit_lab.utils.rng import seeded

        with seeded(self.cfg.hspace.init_seed):
            self.delta = build_delta(self.prior.unet, zero_init=self.cfg.hspace.zero_init).to(self.device)

    @property
    def shift(self) -> HSpaceShift:
        self.build_networks()
        return HSpaceShift(self.prior.unet, self.delta)

    # --- the edit ---------------------------------------------------------------------------------------------
    def edit_latents(self, x_T: torch.Tensor, indices, scale: float | None = None, steps: int | None = None):
        """Generate from inverted latents with the trained shift; image ``i``'s boosting noise is seeded by
        ``edit.seed + i``, so an image's edit does not depend on the batching."""
        s, e = self.cfg.schedule, self.cfg.edit
        gens = [torch.Generator().manual_seed(e.seed + int(i)) for i in indices]

        def noise(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).to(x.device, x.dtype)

        out = process.generate(self.prior, x_T, steps or e.steps, s.t_0, self.shift, s.t_edit,
                               e.scale if scale is None else scale, s.t_boost, s.boost_eta, noise)  # fmt: skip
        return out.clamp(-1, 1)

    @torch.no_grad()
    def edit_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Images → ``source`` (at the prior's size) / ``edited``, and ``latents`` (the inverted x_T): DDIM inversion
        to t₀, then generation with the shift; item i's boosting noise is seeded by ``edit.seed + i``."""
        x0 = fit_images(batch["image"].float(), self.prior.image_size).to(self.device)
        indices = [int(i) for i in batch.get("index", range(len(x0)))]
        x_T = process.invert(self.prior, x0, self.cfg.invert.steps, self.cfg.schedule.t_0)
        return {"source": x0, "edited": self.edit_latents(x_T, indices), "latents": x_T}

    def reconstruct(self, x_T: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """The unedited deterministic DDIM result from the same latents."""
        return process.generate(self.prior, x_T, steps or self.cfg.edit.steps, self.cfg.schedule.t_0).clamp(-1, 1)

    # --- stages -----------------------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, ctx: StageContext) -> None:
        if not (stage.name == "eval" and self.cfg.eval.folder.pred):
            self.to(ctx.device)
            self.build_networks()
        super().run_stage(stage, ctx)

    def stage_fit(self, ctx: StageContext) -> dict[str, float] | None:
        c = self.cfg
        for key, ok in (("gradient_clip_val", None), ("accumulate_grad_batches", 1)):
            if ctx.trainer_cfg.get(key, ok) not in (ok,):
                raise UserError(f"trainer.{key}={ctx.trainer_cfg.get(key)}: Asyrp steps its optimiser itself; "
                                f"leave it at {ok}")  # fmt: skip
        cache = Path(c.invert.cache_dir).expanduser() if c.invert.cache_dir else ctx.run_dir / "inversions"
        x0, x_T = pairs.inversion_pairs(self, ctx.datamodule, cache)
        self._preview = (x0[: c.fit.preview_images], x_T[: c.fit.preview_images])
        loader = pairs.pairs_loader(x0, x_T, c.fit.batch_size, c.seed)
        self._train_pairs = process.training_pairs(c.fit.train_steps, c.schedule.t_0, c.schedule.t_edit)
        k = len(self._train_pairs)
        self._batches_per_epoch = len(x0) // c.fit.batch_size
        steps = c.fit.epochs * self._batches_per_epoch * k
        settings = SimpleNamespace(
            steps=steps, checkpoint_every=c.fit.checkpoint_every * k, preview_every=c.fit.preview_every * k
        )
        log.info("Asyrp fit: %d images × %d epochs, %d optimiser steps per trajectory (t ∈ [%d, %d])",
                 len(x0), c.fit.epochs, k, c.schedule.t_edit, c.schedule.t_0)  # fmt: skip
        with warnings.catch_warnings():  # checkpoints hold the state after each step, which is what resume needs
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            # max_epochs: exact under DDP too (each rank sees its shard)
            metrics = self.run_training(ctx, settings, max_epochs=c.fit.epochs, train_dataloaders=loader)
        self.mark_trained("fit")
        if ctx.global_rank == 0:
            self.export(ctx.run_dir)
        ctx.write_metrics(metrics)
        return metrics

    # edit / eval: the shared passes (``methods.editing``) over ``edit_batch``; Asyrp's edit stage also scores
    # ``eval.metrics`` and writes the unedited reconstruction from the same latents (``edit.reconstruction``)
    def edit_metrics(self) -> list[str]:
        return list(self.cfg.eval.metrics)

    def edit_extras(self, batch: dict, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"reconstruction": self.reconstruct(out["latents"])} if self.cfg.edit.reconstruction else {}

    # --- trained weights --------------------------------------------------------------------------------------
    def export(self, run_dir: Path) -> Path:
        """``<run>/asyrp.safetensors``: the Δh network (``delta.*``); the settings it was trained with as config."""
        c = self.cfg
        meta = {
            "prompt": c.prompt.text,
            "source_text": c.prompt.source_text,
            "t_edit": c.schedule.t_edit,
            "t_0": c.schedule.t_0,
            "train_steps": c.fit.train_steps,
            "prior": str(c.prior.get("source", "")),
        }
        state = {f"delta.{k}": v.detach().cpu() for k, v in self.delta.state_dict().items()}
        return save_artifact(Path(run_dir) / EXPORT, state, {"method": "asyrp", **meta})

    def load_trained(self, path: str | Path, train_stage: str = "fit") -> None:
        self.build_networks()
        what = "Asyrp h-space module (for this prior's bottleneck, method.prior)"
        load_state_into(self.delta, load_weights(path, what), path, what, prefix="delta.")

    # --- training ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return instantiate(self.cfg.optim)(params=self.delta.parameters())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.build_networks()

    def _lr(self) -> float:
        """StepLR by epoch, from the global step alone (so a resumed run sets exactly the lr it would have)."""
        f = self.cfg.fit
        epoch = self.global_step // max(1, len(self._train_pairs)) // max(1, self._batches_per_epoch)
        return float(self.cfg.optim["lr"]) * f.lr_gamma ** (epoch // f.lr_step_epochs)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        c, prior, shift = self.cfg, self.prior, self.shift
        opt = self.optimizers()
        for group in opt.param_groups:
            group["lr"] = self._lr()
        if self._recon_weight is None:
            cos = text_cosine(self.clip, c.prompt.source_text, c.prompt.text) if c.loss.text_cosine_weight else 1.0
            self._recon_weight = c.loss.recon * cos
        identity = self.identity if c.loss.identity > 0 else None
        x0 = batch["x0"].float()
        x_edit = x_orig = batch["x_T"].float()
        sums = {"loss": 0.0, "clip": 0.0, "recon": 0.0, "identity": 0.0}
        for t, t_next in self._train_pairs:
            a_t, a_next = process.alpha_bar(prior, t, x0), process.alpha_bar(prior, t_next, x0)
            with torch.no_grad():  # ε on the unedited trajectory and the original ε on the edited one
                eps_orig, eps_dir = prior.predict_eps(torch.cat([x_orig, x_edit]), t).chunk(2)
            p_edit = process.predict_x0(x_edit, process.eps_shifted(prior, shift, x_edit, t), a_t)
            p_orig = process.predict_x0(x_orig, eps_orig, a_t)
            terms = asyrp_loss(p_edit, p_orig, x0, c.loss, self.clip if c.loss.clip > 0 else None,
                               c.prompt.source_text, c.prompt.text, self._recon_weight, identity)  # fmt: skip
            if not torch.isfinite(terms.total):
                raise UserError(
                    f"non-finite Asyrp loss at step {self.global_step} (t={t}); training stopped, the last good "
                    "checkpoint is kept in checkpoints/fit/ (try a lower method.optim.lr)"
                )
            opt.zero_grad()
            self.manual_backward(terms.total)
            opt.step()
            x_edit = process.ddim_next(p_edit.detach(), eps_dir, a_t, a_next)  # P_t edited, D_t original
            x_orig = process.ddim_next(p_orig, eps_orig, a_t, a_next)
            for name in sums:
                sums[name] += float(getattr(terms, "total" if name == "loss" else name).detach())
        k = len(self._train_pairs)
        logs = {f"train/{n}": v / k for n, v in sums.items() if n != "identity" or identity is not None}
        self.log_dict({**logs, "train/lr": self._lr()}, prog_bar=True, batch_size=x0.shape[0])

    @torch.no_grad()
    def preview_images(self) -> dict[str, torch.Tensor]:
        """Sources (first row) and their current edits (second row) of the first training images."""
        x0, x_T = self._preview
        edited = self.edit_latents(x_T.to(self.device), range(len(x_T)))
        return {"before_after": torch.cat([x0.to(self.device), edited])}
