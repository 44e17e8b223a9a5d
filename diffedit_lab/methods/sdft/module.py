"""SDFT (Hur et al., "Expanding Expressiveness of Diffusion Models with Limited Data via Self-Distillation based
Fine-Tuning", paper 002) as a LightningModule.

The student is a trainable copy of a pretrained unconditional prior (``method.source``: the converted ADM FFHQ 256,
any diffusers ``UNet2DModel`` folder or hub id, or the tiny random prior of tests); the teacher is the same source,
frozen (a lazily built component: never in a checkpoint, half precision on GPU, loaded only when λ or λ' > 0).
The loss is in :mod:`.losses`; an EMA of the student (:mod:`.ema`) is what sampling, translation and eval use.

Stages: ``fit`` → ``sample`` → ``eval`` by default; ``train_classifier`` + ``translate`` (SDEdit/EGSDE,
:mod:`.inference`) and ``edit`` (Asyrp on the fine-tuned EMA, :mod:`.edit`) on request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from diffedit_lab.diffusion import samplers
from diffedit_lab.diffusion.priors import UnconditionalPrior
from diffedit_lab.methods.base import EditingMethod
from diffedit_lab.methods.preflight import Preflight, check_within, preflight_data
from diffedit_lab.methods.sdft import inference
from diffedit_lab.methods.sdft.config import SDFTConfig
from diffedit_lab.methods.sdft.ema import make_ema
from diffedit_lab.methods.sdft.losses import PosteriorTable, sdft_loss
from diffedit_lab.methods.stage import Stage, StageContext
from diffedit_lab.utils import rng as rng_utils
from diffedit_lab.utils.artifacts import save_artifact
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import atomic_dir
from diffedit_lab.utils.weights import load_state_into, load_weights

log = logging.getLogger(__name__)

EXPORT = "sdft.safetensors"  # student + EMA state dict, written after fit
EMA_FOLDER = "ema_unet"  # the EMA model as a diffusers folder: usable as any method's prior (`prior.source=`)
CLASSIFIER = "domain_classifier.safetensors"  # EGSDE's domain classifier, written by stage train_classifier


class SDFTModule(EditingMethod):
    Config = SDFTConfig
    EDIT_STAGE = "translate"
    STAGES = (
        Stage("fit", train=True, needs=("source",), outputs=(EXPORT, EMA_FOLDER), product="SDFT model"),
        Stage("sample", needs=("source",), uses="fit"),
        Stage(
            "train_classifier",
            train=True,
            default=False,
            needs=("source",),
            outputs=(CLASSIFIER,),
            weights_key="egsde.classifier_weights",
            product="EGSDE domain classifier",
        ),  # fmt: skip
        Stage("translate", default=False, needs=("source",), uses="fit"),
        Stage("edit", default=False, needs=("source",), uses="fit"),
        Stage("eval", needs=("source",), uses="fit"),
    )

    @classmethod
    def needs_classifier(cls, cfg: SDFTConfig, pre: Preflight) -> bool:
        return (pre.runs("translate") and cfg.translate.method == "egsde") or (
            pre.runs("eval") and "egsde" in cfg.eval.translation_methods and cfg.eval.translation_images > 0
        )

    @classmethod
    def check_translate(cls, cfg: SDFTConfig, pre: Preflight) -> None:
        """EGSDE finds a domain classifier (trained in this invocation, given, or left by an earlier one); the
        source-domain images exist; the low-pass factor divides the prior's image size."""
        if cls.needs_classifier(cfg, pre) and not pre.runs("train_classifier"):
            cls.trained_file(cfg, pre.run_dir, pre.ckpt_path, "train_classifier")
        if not cfg.translate.source:
            raise UserError("SDFT translation needs source-domain images: set method.translate.source (e.g. data=ffhq)")
        preflight_data(cfg.translate.source, "method.translate.source")
        shape, factor = pre.prior_shape(cfg.source), cfg.egsde.downsample
        check_within(shape, translate__steps=cfg.translate.steps, egsde__steps=cfg.egsde.steps)
        if shape is not None and cfg.translate.method == "egsde" and shape.sample_size % factor:
            raise UserError(f"method.egsde.downsample={factor}: must divide the prior's image size {shape.sample_size}")

    @classmethod
    def check_fit(cls, cfg: SDFTConfig, pre: Preflight) -> None:
        if cfg.fit.fid_every:
            check_within(pre.prior_shape(cfg.source), fit__fid_steps=cfg.fit.fid_steps or cfg.sample.steps)

    @classmethod
    def check_sample(cls, cfg: SDFTConfig, pre: Preflight) -> None:
        check_within(pre.prior_shape(cfg.source), sample__steps=cfg.sample.steps)

    @classmethod
    def check_train_classifier(cls, cfg: SDFTConfig, pre: Preflight) -> None:
        if not cfg.translate.source:
            raise UserError("stage train_classifier needs source-domain images: set method.translate.source")
        preflight_data(cfg.translate.source, "method.translate.source")

    @classmethod
    def check_edit(cls, cfg: SDFTConfig, pre: Preflight) -> list[Path]:
        """Stage edit's Asyrp runs (one per prompt) are checked before anything trains (:func:`.edit.check`)."""
        from diffedit_lab.methods.sdft.edit import check

        return check(cfg, pre)

    @classmethod
    def check_eval(cls, cfg: SDFTConfig, pre: Preflight) -> None:
        if cls.needs_classifier(cfg, pre) and not pre.runs("train_classifier"):
            cls.trained_file(cfg, pre.run_dir, pre.ckpt_path, "train_classifier")
        if cfg.eval.translation_images > 0 and cfg.eval.translation_methods and not cfg.eval.folder.pred:
            if not cfg.translate.source:
                raise UserError("SDFT translation eval needs source-domain images: set method.translate.source")
            preflight_data(cfg.translate.source, "method.translate.source")
        if cfg.eval.target and not cfg.eval.folder.pred:
            preflight_data(cfg.eval.target, "method.eval.target")
        if not cfg.eval.folder.pred:
            check_within(
                pre.prior_shape(cfg.source), sample__steps=cfg.sample.steps, translate__steps=cfg.translate.steps
            )

    def __init__(self, cfg: SDFTConfig):
        super().__init__(cfg)
        self.student: UnconditionalPrior | None = None
        self.ema = None
        self._table: PosteriorTable | None = None
        self.quality_monitor = None
        self.editors: dict = {}  # prompt -> the AsyrpModule of stage edit
        self._views: dict = {}  # (ema, device, dtype) -> the sampler's prior view (a plain dict: not a child)
        self._noise = torch.Generator().manual_seed(int(self.cfg.seed))  # t and ε; checkpointed

    # --- networks ---------------------------------------------------------------------------------------------
    def _source_node(self, **overrides):
        node = OmegaConf.create(dict(self.cfg.source))
        node.pop("domain", None)
        for k, v in overrides.items():
            node[k] = v
        return node

    def build_networks(self) -> None:
        """The student (fp32, trainable; the source weights or a random init) and its EMA. Idempotent."""
        if self.student is not None:
            return
        student = instantiate(self._source_node(dtype="fp32", trainable=True))
        if not isinstance(student, UnconditionalPrior):
            raise UserError(f"method.source must build an UnconditionalPrior (pixel U-Net), got {type(student)}")
        if self.cfg.init == "random":  # the from-scratch baseline: same architecture and schedule, new weights
            from diffedit_lab.utils.rng import seeded

            with seeded(self.cfg.init_seed):
                student.unet = type(student.unet).from_config(student.unet.config)
        student.unet.train()
        self.student = student
        self.ema = make_ema(student.unet, self.cfg.ema.decay)
        self._table = PosteriorTable.from_scheduler(student.scheduler)

    @property
    def teacher(self) -> UnconditionalPrior:
        """The frozen source (half precision on GPU with ``teacher_dtype=auto``)."""
        return self.component("teacher", self._source_node(dtype=self.cfg.teacher_dtype))

    def sampling_prior(self, ema: bool = True) -> UnconditionalPrior:
        """A prior view of the EMA (or raw student) U-Net for the samplers; shares the weights."""
        self.build_networks()
        unet = self.ema.module if ema else self.student.unet
        param = next(unet.parameters())
        key = (ema, param.device, param.dtype)  # built once per placement, not per sampled batch
        if key not in self._views:
            prior = UnconditionalPrior(unet, self.student.scheduler, dtype=param.dtype, trainable=True)
            self._views[key] = prior.to(param.device)
        return self._views[key]

    # --- stages -----------------------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, ctx: StageContext) -> None:
        if not (stage.name == "eval" and self.cfg.eval.folder.pred):
            self.build_networks()
        super().run_stage(stage, ctx)

    def stage_fit(self, ctx: StageContext) -> dict[str, float] | None:
        monitor = None
        if self.cfg.fit.fid_every:  # FID of EMA samples in Lightning's validation loop, best.ckpt by ModelCheckpoint
            monitor, best, data, validation = inference.sample_quality(self, ctx)
            metrics = self.run_training(ctx, self.cfg.fit, [monitor, best], prefixes=("train/", "val/"),
                                        trainer_overrides=validation, datamodule=data)  # fmt: skip
        else:
            metrics = self.run_training(ctx, self.cfg.fit, prefixes=("train/",))
        self.quality_monitor = monitor  # what tests and notebooks inspect (history, best step)
        self.mark_trained("fit")
        if ctx.global_rank == 0:
            self.export(ctx.run_dir)
        metrics |= monitor.summary() if monitor else {}
        ctx.write_metrics(metrics)
        return metrics

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        """A batch of seeds → samples for the FID monitor (``SampleQuality`` scores them)."""
        return {"metrics": {"fake": inference.quality_samples(self, [int(x) for x in batch["seed"]]).float()}}

    def stage_sample(self, ctx: StageContext) -> dict[str, float] | None:
        return inference.run_sample(self, ctx)

    def stage_train_classifier(self, ctx: StageContext) -> dict[str, float] | None:
        from diffedit_lab.methods.sdft.classifier import DomainClassifierModule, TwoDomains

        c = self.cfg.train_classifier
        module = DomainClassifierModule(self.new_classifier(), self.student.alphas_cumprod, c.lr, c.seed)
        data = TwoDomains(instantiate(self.cfg.translate.source), ctx.datamodule)
        metrics = self.run_training(ctx, c, module=module, datamodule=data, prefixes=("classifier/",))
        if ctx.global_rank == 0:
            save_artifact(
                ctx.run_dir / CLASSIFIER,
                module.classifier.state_dict(),
                {"method": "sdft", "network": "domain_classifier"},
            )
        self._frozen["classifier"] = module.classifier.eval().requires_grad_(False)
        ctx.write_metrics(metrics)
        return metrics

    def new_classifier(self):
        from diffedit_lab.methods.sdft.classifier import DomainClassifier
        from diffedit_lab.utils.rng import seeded

        c = self.cfg.train_classifier
        with seeded(c.seed):
            return DomainClassifier(tuple(c.channels), c.groups, in_channels=self.student.in_channels)

    def domain_classifier(self, ctx: StageContext):
        """The trained domain classifier for EGSDE: ``egsde.classifier_weights``,
        ``<run>/domain_classifier.safetensors`` or ``checkpoints/train_classifier/last.ckpt``."""
        if self._frozen.get("classifier") is None:
            self.load_trained(self.trained_weights_path(ctx, "train_classifier"), "train_classifier")
        return self._frozen["classifier"].to(self.device)

    @classmethod
    def pipeline_stages(cls, cfg: SDFTConfig) -> tuple[str, ...]:
        return ("fit", "train_classifier") if cfg.translate.method == "egsde" else ("fit",)

    @torch.no_grad()
    def edit_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Source-domain images → ``source``/``translated`` by ``translate.method`` (SDEdit or EGSDE) on the EMA."""
        s = self.cfg.translate
        classifier = self._frozen.get("classifier") if s.method == "egsde" else None
        if s.method == "egsde" and classifier is None:
            raise UserError("EGSDE translation needs the domain classifier: load it first (load_trained)")
        gen = generator or torch.Generator(self.device).manual_seed(s.seed)
        return inference.translate(self, s, batch["image"].to(self.device).float(), gen, classifier)

    def stage_translate(self, ctx: StageContext) -> dict[str, float] | None:
        return inference.run_translate(self, ctx)

    def stage_edit(self, ctx: StageContext) -> dict[str, float] | None:
        from diffedit_lab.methods.sdft.edit import run_edit

        return run_edit(self, ctx)

    def stage_eval(self, ctx: StageContext) -> dict[str, float] | None:
        if self.cfg.eval.folder.pred:
            self.evaluate_folder(ctx, self.cfg.eval.folder)
            return
        return inference.run_eval(self, ctx)

    # --- trained weights --------------------------------------------------------------------------------------
    def export(self, run_dir: Path) -> None:
        """``sdft.safetensors`` (student + EMA) and the EMA as a diffusers folder ``ema_unet/``, each atomically."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        save_artifact(run_dir / EXPORT, state, {"method": "sdft", "networks": ["student", "ema"]})
        atomic_dir(run_dir / EMA_FOLDER, self.sampling_prior(ema=True).save_pretrained)

    def load_trained(self, path: Path, train_stage: str = "fit") -> None:
        self.build_networks()
        if train_stage == "train_classifier":
            clf, what = self.new_classifier(), "EGSDE domain classifier"
            load_state_into(
                clf, load_weights(path, what), path, what, prefix="classifier." if path.suffix == ".ckpt" else ""
            )
            self._frozen["classifier"] = clf.eval().requires_grad_(False)
            return
        load_state_into(self, load_weights(path, "SDFT model"), path, "SDFT model (method.source's architecture)")

    # --- training ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return instantiate(self.cfg.optim)(params=self.student.unet.parameters())

    def draw_noise(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t ~ U{0..T−1} and ε ~ N(0, I) from the module's checkpointed stream (drawn on CPU: device-independent)."""
        t = torch.randint(0, self.student.num_train_timesteps, (x0.shape[0],), generator=self._noise)
        eps = torch.randn(x0.shape, generator=self._noise)
        return t.to(x0.device), eps.to(x0.device)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x0 = batch["image"].float()
        t, eps = self.draw_noise(x0)
        teacher = self.teacher if self.cfg.needs_teacher else None
        terms = sdft_loss(self.student, teacher, x0, eps, t, self.cfg.loss, self._table)
        if not torch.isfinite(terms.total):
            raise UserError(
                f"non-finite loss at step {self.global_step}; training stopped, the last good checkpoint is kept in "
                "checkpoints/fit/ (try a lower lr or trainer.precision=32-true)"
            )
        logs = {"train/loss": terms.total.detach(), "train/simple": terms.simple.mean().detach()}
        if self.student.learned_variance and self.cfg.loss.vb:
            logs["train/vb"] = terms.vb.mean().detach()
        if self.cfg.loss.lambda_distill > 0:
            logs["train/distill"] = terms.distill.mean().detach()
        if self.cfg.loss.lambda_aux > 0:
            logs["train/aux"] = terms.aux.mean().detach()
        self.log_dict(logs, prog_bar=True, batch_size=x0.shape[0])
        return terms.total

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.student.unet)  # after every optimiser step (accumulation boundaries)

    def on_train_start(self) -> None:
        rng_utils.seed_stream(self, self._noise, self.cfg.seed, "sdft_noise_rng")  # DDP: every rank its own t and ε

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        rng_utils.save_stream(self, checkpoint, "sdft_noise_rng", self._noise)  # every rank's stream

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.build_networks()
        rng_utils.load_stream(self, checkpoint, "sdft_noise_rng", self._noise, self.cfg.seed)

    @torch.no_grad()
    def preview_images(self) -> dict[str, torch.Tensor]:
        """EMA samples from fixed noise (DDIM, the sample stage's settings), for the image-grid callback."""
        s = self.cfg.sample
        n, size = self.cfg.fit.preview_images, self.student.image_size
        x_T = inference.seeded_noise(range(n), (self.student.in_channels, size, size), self.device)
        prior = self.sampling_prior(ema=s.ema)
        return {"ema_samples": samplers.ddim_sample(prior, x_T, num_steps=s.steps, eta=0.0, clip_sample=s.clip_sample)}
