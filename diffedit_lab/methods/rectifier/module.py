"""Rectifier (Hou et al., "High-Fidelity Diffusion-based Image Editing", paper 003) as a LightningModule.

A frozen pixel U-Net (``method.base``: google/ddpm-ema-celebahq-256, ddpm-ema-church-256, the converted ADM FFHQ,
or the tiny random prior of tests) is modulated per sample by a hypernetwork (:mod:`diffedit_lab.models.rectifier`).
Two networks are trained, in two training stages with their own Trainers and ``checkpoints/<stage>/``:

* ``rectifier`` (stage ``fit``): reconstruction, the noise-fitting loss → ``rectifier.safetensors``;
* ``editor`` (stage ``edit``): Algorithm 1 for the prompt → ``editor.safetensors``. The editor is a COPY of the trained
  rectifier fine-tuned for the attribute (the paper "reuses the rectifier" and builds editing "upon the model
  pretrained by the rectifier part"); the rectifier itself stays untouched, so reconstructions, and the
  inversion of the images to edit, keep using it, and one rectifier serves every prompt.

Stages: ``fit`` → ``reconstruct`` → ``edit`` → ``eval`` by default; ``apply`` (edit the test images with a trained
editor, no training) on request. Inference is in :mod:`.inference`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from diffedit_lab.diffusion.priors import UnconditionalPrior
from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.editing import edit_pass
from diffedit_lab.methods.preflight import Preflight
from diffedit_lab.methods.rectifier import inference
from diffedit_lab.methods.rectifier.config import RectifierConfig
from diffedit_lab.methods.rectifier.data import EditTrainData
from diffedit_lab.methods.rectifier.losses import draw_timesteps, edit_loss, fit_loss
from diffedit_lab.methods.rectifier.rectified import RectifiedPrior, rectified_eps
from diffedit_lab.methods.stage import Stage, StageContext
from diffedit_lab.models.rectifier import RectifierNet, select_layers
from diffedit_lab.utils.artifacts import save_artifact
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.rng import seeded
from diffedit_lab.utils.schema import ConfigError
from diffedit_lab.utils.weights import load_state_into, load_weights

log = logging.getLogger(__name__)

EXPORT = "rectifier.safetensors"
EDITOR = "editor.safetensors"


class RectifierModule(EditingMethod):
    Config = RectifierConfig
    EDIT_STAGE = "apply"
    STAGES = (
        Stage("fit", train=True, needs=("base",), outputs=(EXPORT,), product="rectifier"),
        Stage("reconstruct", needs=("base",), uses="fit"),
        Stage(
            "edit",
            train=True,
            needs=("base", "clip"),
            outputs=(EDITOR,),
            weights_key="editor_weights",
            uses="fit",
            product="editor",
        ),  # fmt: skip
        Stage("apply", default=False, needs=("base", "clip"), uses="edit"),
        Stage("eval", needs=("clip",)),
    )
    NETS = {"fit": "rectifier", "edit": "editor"}  # training stage -> the network it trains

    @classmethod
    def stage_needs(cls, stage: Stage, cfg: RectifierConfig) -> tuple[str, ...]:
        cfg.check_stage("method", stage.name)  # called at start-up for every requested stage: its own rules too
        return stage.needs

    @classmethod
    def stage_uses(cls, stage: Stage, cfg: RectifierConfig) -> str | None:
        """The trained rectifier inverts the test images (``invert_with=rectified``) and is the editor's start
        (``edit.init=rectifier``); ``init=scratch`` with ``invert_with=base`` (or ``apply`` with base inversion)
        uses neither, so it needs no trained rectifier."""
        if stage.name == "edit":
            e = cfg.edit
            return "fit" if e.sample.invert_with == "rectified" or e.init == "rectifier" else None
        return stage.uses

    @classmethod
    def check_fit(cls, cfg: RectifierConfig, pre: Preflight) -> None:
        cls.check_base(cfg, pre, "fit")

    @classmethod
    def check_reconstruct(cls, cfg: RectifierConfig, pre: Preflight) -> None:
        cls.check_base(cfg, pre, None)

    @classmethod
    def check_edit(cls, cfg: RectifierConfig, pre: Preflight) -> None:
        cls.check_base(cfg, pre, "edit")

    @classmethod
    def check_apply(cls, cfg: RectifierConfig, pre: Preflight) -> None:
        if cfg.edit.sample.invert_with == "rectified" and not pre.runs("fit"):
            cls.trained_file(cfg, pre.run_dir, pre.ckpt_path, "fit")
        cls.check_base(cfg, pre, None)

    @classmethod
    def check_base(cls, cfg: RectifierConfig, pre: Preflight, train_stage: str | None) -> None:
        """What the base U-Net's architecture decides, read without its weights: the layer patterns match
        convolutions, the images have its size, the preview timestep is one of its timesteps."""
        shape = pre.prior_shape(cfg.base)
        if shape is None:
            return  # a hub model not in the cache: its loader says so when the stage builds it
        select_layers(shape.meta_unet(), cfg.net.layers)
        size = getattr(pre.datamodule, "size", None)
        if size is not None and tuple(size) != (shape.sample_size, shape.sample_size):
            raise UserError(
                f"images are {tuple(size)} but the base U-Net takes {shape.sample_size}x{shape.sample_size}: set "
                f"data.resolution={shape.sample_size}"
            )
        if train_stage is not None:
            preview_t = cls._settings_for(cfg, train_stage).preview_t
            if preview_t >= shape.num_train_timesteps:
                raise ConfigError(
                    f"method.{train_stage}.preview_t",
                    preview_t,
                    f"expected < T={shape.num_train_timesteps} (the prior's)",
                )

    def __init__(self, cfg: RectifierConfig):
        super().__init__(cfg)
        self.rectifier: RectifierNet | None = None
        self.editor: RectifierNet | None = None
        self._preview: torch.Tensor | None = None

    # --- networks ---------------------------------------------------------------------------------------------
    @property
    def base(self) -> UnconditionalPrior:
        node = OmegaConf.create(dict(self.cfg.base))
        node["dtype"] = self.cfg.base_dtype
        prior = self.component("base", node)
        if not isinstance(prior, UnconditionalPrior):
            raise UserError(f"method.base must build a pixel UnconditionalPrior (a UNet2DModel), got {type(prior)}")
        return prior

    def new_net(self) -> RectifierNet:
        """A freshly initialised rectifier for the base U-Net (Δ = 0), seeded by ``net.init_seed``."""
        n, base = self.cfg.net, self.base
        with seeded(n.init_seed):
            net = RectifierNet(
                select_layers(base.unet, n.layers),
                base.image_size,
                base.in_channels,
                n.encoder.layers,
                n.encoder.widths,
                n.encoder.norm,
                n.subnet_channels,
                n.time_dim,
                n.encoder.pretrained,
            )
        return net.to(self.device)

    def build_rectifier(self) -> None:
        if self.rectifier is None:
            self.rectifier = self.new_net()

    def build_editor(self) -> None:
        """The editor starts as a copy of the (trained) rectifier, or Δ = 0 with ``edit.init=scratch``."""
        if self.editor is None:
            self.build_rectifier()
            self.editor = copy.deepcopy(self.rectifier) if self.cfg.edit.init == "rectifier" else self.new_net()

    def rectified(self, net: RectifierNet, x0: torch.Tensor) -> RectifiedPrior:
        return RectifiedPrior(self.base, net, x0, self.cfg.apply, self.cfg.net.clip_estimate)

    # --- stages -----------------------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, ctx: StageContext) -> None:
        if stage.name != "eval":
            self.build_rectifier()
        self._preview = None  # each training stage previews its own first batch
        super().run_stage(stage, ctx)

    def stage_fit(self, ctx: StageContext) -> dict[str, float] | None:
        self._train_only(self.rectifier)
        metrics = self.run_training(ctx, self.cfg.fit, prefixes=("fit/",))
        self.mark_trained("fit")
        if ctx.global_rank == 0:
            self.export(ctx.run_dir / EXPORT, "rectifier")
        ctx.write_metrics(metrics)
        return metrics

    def stage_reconstruct(self, ctx: StageContext) -> dict[str, float] | None:
        self.ensure_trained(ctx, "fit")
        return inference.run_reconstruct(self, ctx)

    def stage_edit(self, ctx: StageContext) -> dict[str, float] | None:
        if self.stage_uses(self.stage, self.cfg) == "fit":
            self.ensure_trained(ctx, "fit")
        self.build_editor()
        self._train_only(self.editor)
        data = EditTrainData(ctx.datamodule, self.cfg.edit.train_images)
        metrics = self.run_training(ctx, self.cfg.edit, datamodule=data, prefixes=("edit/",))
        self.mark_trained("edit")
        if ctx.global_rank == 0:
            self.export(ctx.run_dir / EDITOR, "editor")
        ctx.write_metrics(metrics)
        return metrics | self.edit_test_images(ctx)

    def stage_apply(self, ctx: StageContext) -> dict[str, float] | None:
        if self.cfg.edit.sample.invert_with == "rectified":
            self.ensure_trained(ctx, "fit")
        self.ensure_trained(ctx, "edit")
        return self.edit_test_images(ctx)

    def edit_test_images(self, ctx: StageContext) -> dict[str, float]:
        """The shared edit pass (``methods.editing``) over ``edit_batch``: invert, sample with the editor."""
        s = self.cfg.edit.sample
        return edit_pass(self, ctx, "edit", s, s.metrics)

    def stage_eval(self, ctx: StageContext) -> dict[str, float] | None:
        return inference.run_eval(self, ctx)

    def _train_only(self, net: RectifierNet) -> None:
        """Only ``net`` (the rectifier in fit, the editor in edit) receives gradients."""
        for other in (self.rectifier, self.editor):
            if other is not None:
                other.requires_grad_(other is net)

    def on_train_start(self) -> None:
        # Lightning keeps the modes modules had (an inference stage leaves them in eval): the trained network
        # trains (batch statistics), the frozen one stays in eval
        trained = self.editor if self._settings() is self.cfg.edit else self.rectifier
        for net in (self.rectifier, self.editor):
            if net is not None:
                net.train(net is trained)

    # --- trained weights --------------------------------------------------------------------------------------
    def export(self, path: Path, which: str) -> None:
        net = getattr(self, which)
        state = {f"{which}.{k}": v.detach().cpu() for k, v in net.state_dict().items()}
        save_artifact(path, state, {"method": "rectifier", "network": which, "layers": [s.name for s in net.layers]})

    def build_trained(self, train_stage: str) -> None:
        self.build_rectifier()
        if self.NETS[train_stage] == "editor":
            self.build_editor()

    def load_trained(self, path: Path, train_stage: str) -> None:
        """Load the ``<net>.*`` entries of an export or a Lightning checkpoint into the network ``train_stage``
        trains (the rectifier for fit, the editor for edit)."""
        which = self.NETS[train_stage]
        self.build_trained(train_stage)
        what = f"trained {which} (method.net / method.base)"
        load_state_into(getattr(self, which), load_weights(path, what), path, what, prefix=f"{which}.")

    # --- training ---------------------------------------------------------------------------------------------
    @staticmethod
    def _settings_for(cfg: RectifierConfig, stage: str):
        return cfg.edit if stage == "edit" else cfg.fit

    def _settings_of(self, stage: str):
        return self._settings_for(self.cfg, stage)

    def _settings(self):
        return self._settings_of(self.stage.name if self.stage is not None else "fit")

    def configure_optimizers(self):
        s = self._settings()
        net = self.editor if s is self.cfg.edit else self.rectifier
        opt = instantiate(s.optim)(params=net.parameters())
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s.lr_decay.every, gamma=s.lr_decay.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    @classmethod
    def pipeline_stages(cls, cfg: RectifierConfig) -> tuple[str, ...]:
        return ("fit", "edit") if cfg.edit.sample.invert_with == "rectified" else ("edit",)

    @torch.no_grad()
    def edit_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Images → ``source``/``edited``: DDIM inversion (rectified or base, ``edit.sample.invert_with``), then the
        whole trajectory sampled with the editor's modulated kernels."""
        s = self.cfg.edit.sample
        x0 = batch["image"].to(self.device).float()
        self._check_size(x0)
        inverter = self.rectified(self.rectifier, x0) if s.invert_with == "rectified" else self.base
        return {"source": x0, "edited": inference.round_trip(self.rectified(self.editor, x0), inverter, x0, s.steps)}

    def _check_size(self, x0: torch.Tensor) -> None:
        size = self.base.image_size
        if tuple(x0.shape[-2:]) != (size, size):
            raise UserError(
                f"images are {tuple(x0.shape[-2:])} but the base U-Net takes {size}x{size}: set data.resolution={size}"
            )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x0 = batch["image"].float()
        self._check_size(x0)
        if self._preview is None:
            self._preview = x0[: self._settings().preview_images].detach().clone()
        base, n = self.base, x0.shape[0]
        if self._settings() is self.cfg.fit:
            t = draw_timesteps(n, base.num_train_timesteps, self.rng("fit_t")).to(x0.device)
            eps = torch.randn(x0.shape, generator=self.rng("fit_noise")).to(x0.device)
            terms = fit_loss(base, self.rectifier, x0, t, eps, self.cfg.apply, self.cfg.net.clip_estimate)
            logs = {"fit/loss": terms.loss.detach(), "fit/base_mse": terms.base_mse}
        else:
            e, p = self.cfg.edit, self.cfg.prompt
            grid = inference.ddim_timesteps(base, e.sample.steps) if e.timesteps == "schedule" else None
            t = draw_timesteps(n, base.num_train_timesteps, self.rng("edit_t"), grid).to(x0.device)
            eps = torch.randn(x0.shape, generator=self.rng("edit_noise")).to(x0.device)
            clip = self.clip if e.lambda_clip > 0 else None
            terms = edit_loss(base, self.editor, clip, x0, t, eps, p.source_text, p.text, e.lambda_clip,
                              e.lambda_l1, self.cfg.apply, self.cfg.net.clip_estimate)  # fmt: skip
            logs = {"edit/loss": terms.loss.detach(), "edit/clip": terms.clip, "edit/l1": terms.l1}
        if not torch.isfinite(terms.loss):
            raise UserError(
                f"non-finite loss at step {self.global_step} of stage {self.stage.name}; the last good checkpoint is "
                f"kept in checkpoints/{self.stage.name}/ (try a lower lr)"
            )
        self.log_dict(logs, prog_bar=True, batch_size=n)
        return terms.loss

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.build_rectifier()
        if any(k.startswith("editor.") for k in checkpoint.get("state_dict", {})):
            self.build_editor()
            self._train_only(self.editor)

    @torch.no_grad()
    def preview_images(self) -> dict[str, torch.Tensor]:
        """Rows: x₀, the base model's P_t, the trained network's P_t at ``preview_t`` (fixed noise)."""
        if self._preview is None:
            return {}
        s, base = self._settings(), self.base
        x0 = self._preview.to(self.device)
        net = self.editor if s is self.cfg.edit else self.rectifier
        t = torch.full((len(x0),), s.preview_t, device=self.device)  # < T: checked when the stage starts
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(self.device)
        x_t = base.add_noise(x0, eps, t)
        out = rectified_eps(base, net, x0, x_t, t, self.cfg.apply, self.cfg.net.clip_estimate)
        mine = base.x0_from_eps(x_t, out.eps, t).clamp(-1, 1)
        return {f"{self.stage.name}_x0_base_rectified": torch.cat([x0, out.p_t, mine])}
