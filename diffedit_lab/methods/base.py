"""What every method shares: declared stages, a typed config, lazily built frozen components, trained weights.

A method is a LightningModule with

* ``Config``: its config dataclass (``methods/<m>/config.py``), checked at start-up by ``from_config``;
* ``STAGES``: a tuple of :class:`~diffedit_lab.methods.stage.Stage` (name, training or inference, distributed or
  rank 0) and a ``stage_<name>(ctx)`` method for each. ``run_training`` / ``run_predict`` give a stage its own
  Trainer from the context: ``trainer.fit`` for training stages, Lightning's predict loop (``predict_<name>``
  steps, with writer/metric callbacks) for inference.

Frozen pretrained networks (diffusion teachers, generators, CLIP, ArcFace) are built from their Hydra configs on
first use and kept OUT of the module's registered children — so checkpoints hold only what is trained, and an
``edit`` run never loads the teacher it does not need.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning import LightningModule
from omegaconf import DictConfig, OmegaConf

from diffedit_lab.methods.preflight import (
    Preflight,
    check_eval_folders,
    config_value,
    find_trained,
    missing_trained,
    protect_outputs,
)
from diffedit_lab.methods.stage import Stage, StageContext, TrainingResult
from diffedit_lab.utils import rng as rng_utils
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.schema import as_dict, validate
from diffedit_lab.utils.weights import check_weights_file

log = logging.getLogger(__name__)


class EditingMethod(LightningModule):
    Config: ClassVar[type | None] = None
    STAGES: ClassVar[tuple[Stage, ...]] = ()
    EDIT_STAGE: ClassVar[str | None] = None  # the inference stage a pipeline reproduces (``load_pipeline``)

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        if self.Config is not None and not isinstance(cfg, self.Config):
            cfg = validate(self.Config, cfg, "method")
        self.cfg = cfg
        # plain containers, so checkpoints hold no config objects and load with torch.load(weights_only=True)
        self.save_hyperparameters(as_dict(cfg), logger=False)
        object.__setattr__(self, "_frozen", {})  # name -> built frozen component (not a registered child)
        self._rngs: dict[str, torch.Generator] = {}
        self._pending_rng_states: dict[str, torch.Tensor] = {}
        self.stage: Stage | None = None
        self._trained_stages: set[str] = set()  # training stages whose product is in memory
        self._predict_fn: Callable | None = None

    @classmethod
    def from_config(cls, node: DictConfig | dict) -> EditingMethod:
        """Validate ``node`` against ``cls.Config`` (one-line errors, nothing built yet), then construct."""
        return cls(validate(cls.Config, node, "method") if cls.Config is not None else node)

    @staticmethod
    def scores_folder(stage: Stage, cfg: Any) -> bool:
        """``eval`` with ``eval.folder.pred`` set scores two folders of images: no network, no trained weights."""
        folder = getattr(getattr(cfg, "eval", None), "folder", None)
        return stage.name == "eval" and bool(getattr(folder, "pred", None))

    @classmethod
    def stage_needs(cls, stage: Stage, cfg: Any) -> tuple[str, ...]:
        """The component keys whose weight files ``stage`` loads with this config (checked at start-up); scoring a
        folder needs only CLIP, for the text metrics."""
        if cls.scores_folder(stage, cfg):
            text = {"clip_dir", "clip_score"} & set(cfg.eval.folder.metrics)
            return ("clip",) if text and getattr(cfg, "clip", None) else ()
        return stage.needs

    @classmethod
    def check_stages(cls, cfg: Any, pre: Preflight) -> list[Path]:
        """Every start-up check of the requested stages, before the first one starts (nothing built or written):

        * trained-weights files given by path (``method.weights``, ``method.*_weights``, every stage's
          ``weights_key``) exist and are whole, even when the stage that would otherwise produce them runs;
        * each stage that loads a training stage's product (``Stage.uses``) finds it when that stage does not run;
        * ``eval`` scoring two folders (``eval.folder.pred``/``ref``) finds images in both;
        * the method's own per-stage checks, ``check_<stage>(cfg, pre)`` classmethods, declared once per stage
          (returning the finished outputs of nested runs that ``overwrite=true`` moves aside, if any);
        * a training stage that would start over in a run dir holding its finished output stops (one line), unless
          ``overwrite=true``: then the paths to move aside are returned.

        Raise a one-line ``UserError``. Methods add checks through ``check_<stage>``, not by overriding this."""
        top = (f for f in getattr(cfg, "__dataclass_fields__", {}) if f.endswith("_weights"))
        for name in dict.fromkeys(("weights", *top, *(s.weights_key for s in cls.STAGES))):  # nested keys too
            value = config_value(cfg, name)
            if isinstance(value, str) and value:
                if not Path(value).expanduser().is_file():
                    raise UserError(f"method.{name}={value}: no such file")
                check_weights_file(value, f"method.{name}")
        doomed = protect_outputs(pre)  # first: whether a finished stage may be replaced at all
        for stage in pre.stages:
            uses = cls.stage_uses(stage, cfg)
            if uses is not None and not pre.runs(uses):
                cls.trained_file(cfg, pre.run_dir, pre.ckpt_path, uses)
            if cls.scores_folder(stage, cfg):
                check_eval_folders(cfg.eval.folder, pre)
            check = getattr(cls, f"check_{stage.name}", None)
            if check is not None:
                doomed += check(cfg, pre) or []  # a stage running nested runs may name their outputs too
        return doomed

    @classmethod
    def stage_uses(cls, stage: Stage, cfg: Any) -> str | None:
        """The training stage whose product ``stage`` loads with this config (default: ``Stage.uses``; none when
        ``eval`` scores a folder)."""
        return None if cls.scores_folder(stage, cfg) else stage.uses

    @classmethod
    def trained_file(cls, cfg: Any, run_dir: Path, ckpt_path: str | None, train_stage: str) -> Path:
        """The product of ``train_stage`` (lookup: :func:`~diffedit_lab.methods.preflight.find_trained`), checked
        to exist and be a whole checkpoint; else one line saying how to get it."""
        train = next(s for s in cls.STAGES if s.name == train_stage)
        what = train.product or f"{train.name} output"
        path = find_trained(cfg, run_dir, ckpt_path, train)
        if path is None:
            raise missing_trained(train, what)
        return check_weights_file(path, f"trained {what}")

    # --- frozen components ----------------------------------------------------------------------------------
    def component(self, name: str, cfg: DictConfig | dict | None) -> Any:
        """Instantiate ``cfg`` once, freeze it, move it to this module's device, and cache it by ``name``."""
        if name not in self._frozen:
            if cfg is None:
                self._frozen[name] = None
            else:
                cfg = OmegaConf.create(
                    OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
                )
                cfg.pop("domain", None)  # a description used for config checks, not a constructor argument
                # every builder takes ``device``: it picks its precision for it (``dtype: auto``) and lands there
                obj = instantiate(cfg, device=self.device)
                if isinstance(obj, torch.nn.Module):
                    obj.eval().requires_grad_(False)
                self._frozen[name] = obj
        obj = self._frozen[name]
        if isinstance(obj, torch.nn.Module) and getattr(obj, "_diffedit_device", None) != self.device:
            obj.to(self.device)  # only when the method moved: .to() walks every parameter of a large teacher
            object.__setattr__(obj, "_diffedit_device", self.device)
        return obj

    @property
    def clip(self) -> Any:
        """The frozen CLIP of ``cfg.clip`` (text-guided methods), built on first use."""
        return self.component("clip", getattr(self.cfg, "clip", None))

    @property
    def identity(self) -> Any:
        """The face-identity network of ``cfg.identity``, or None when absent (see :meth:`optional_identity`)."""
        return self.optional_identity(getattr(self.cfg, "identity", None))

    def optional_identity(self, cfg: DictConfig | dict | None, name: str = "identity") -> Any:
        """The identity network, or None (one warning) when its weights file is absent: identity losses and metrics
        are then skipped rather than computed with random weights."""
        if name not in self._frozen and cfg is not None:
            path = cfg.get("weights_path")
            random = bool(cfg.get("random_weights", False))  # built at its real shape: nothing to read
            if path is not None and not random and not Path(path).expanduser().is_file():
                log.warning(
                    "identity weights not found at %s: identity loss and metric disabled "
                    "(set identity.weights_path to model_ir_se50.pth, or identity=none)",
                    path,
                )
                self._frozen[name] = None
        return self.component(name, cfg)

    def __getstate__(self) -> dict:  # ddp_spawn pickles the module: rebuild frozen parts in the workers
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_frozen"] = {}
        return state

    # --- stages -----------------------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, ctx: StageContext) -> dict[str, float] | None:
        """Run ``stage_<name>(ctx)`` and return what it returns (its metrics, when it has any)."""
        log.info("stage %s", stage.name)
        self.stage = stage
        return getattr(self, f"stage_{stage.name}")(ctx)

    def run_training(
        self,
        ctx: StageContext,
        settings: Any,
        callbacks: Sequence = (),
        *,
        module: LightningModule | None = None,
        prefixes: tuple[str, ...] = ("train/",),
        max_epochs: int | None = None,
        trainer_overrides: dict[str, Any] | None = None,
        **fit_kwargs: Any,
    ) -> dict[str, float]:
        """``trainer.fit`` of this stage on a Trainer of its own (max_steps, callbacks, ``checkpoints/<stage>/``,
        resumed from that folder when ``ckpt_path=last``) — the one way every training stage trains. ``module``:
        another LightningModule the stage trains (e.g. SDFT's domain classifier); ``fit_kwargs``: the data
        (``datamodule=`` / ``train_dataloaders=``; default the run's datamodule). Returns the logged metrics whose
        names start with ``prefixes``. ``trainer_overrides``: Trainer arguments of this stage (e.g. the validation
        loop's schedule)."""
        trainer = ctx.fit_trainer(self.stage, settings, callbacks, max_epochs=max_epochs, **(trainer_overrides or {}))
        if "datamodule" not in fit_kwargs and "train_dataloaders" not in fit_kwargs:
            fit_kwargs["datamodule"] = ctx.datamodule
        trainer.fit(module or self, ckpt_path=ctx.resume_path(self.stage), **fit_kwargs)
        return TrainingResult((k, float(v)) for k, v in trainer.callback_metrics.items() if k.startswith(prefixes))

    def run_predict(self, ctx: StageContext, dataloader, step: Callable, callbacks: Sequence = ()) -> None:
        """Lightning's predict loop over ``dataloader`` with ``step(batch, batch_idx) -> outputs``; the callbacks
        (image writers, metrics) consume the outputs."""
        trainer = ctx.predict_trainer(self.stage, callbacks)
        self._predict_fn = step
        try:
            trainer.predict(self, dataloaders=dataloader, return_predictions=False)
        finally:
            self._predict_fn = None

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        if self._predict_fn is None:
            raise RuntimeError("predict_step outside run_predict")
        return self._predict_fn(batch, batch_idx)

    # --- the edit, once: stages and pipelines call it ----------------------------------------------------------
    def edit_batch(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The method's inference on one batch (``image``: (B,3,H,W) in [-1, 1]; or ``w``/``seed`` for code-based
        methods; ``index``: the items' positions, for per-item seeds) → named images in [-1, 1], the first being
        what was edited and ``edited`` the result (plus extras such as ``reconstruction``). The method's edit
        stage and its :class:`~diffedit_lab.pipelines.EditPipeline` both call it."""
        raise NotImplementedError(f"{type(self).__name__} has no edit_batch")

    def edit_generator(self) -> torch.Generator | None:
        """The random stream an edit pass hands ``edit_batch`` for the whole split (default None: the method seeds
        its own draws, e.g. per item)."""
        return None

    def edit_extras(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images an edit pass writes beside the source and result, made outside the timed edit (default none)."""
        return {}

    def edit_metrics(self) -> Sequence[str]:
        """What the ``edit`` stage scores beside its latency (default nothing: ``eval`` scores)."""
        return ()

    def ensure_used(self, ctx: StageContext) -> None:
        """Load what the current stage uses (``stage_uses``) when its training stage did not run here."""
        uses = self.stage_uses(self.stage, self.cfg) if self.stage is not None else None
        if uses is not None:
            self.ensure_trained(ctx, uses)

    def stage_edit(self, ctx: StageContext) -> dict[str, float] | None:
        """Edit the first ``edit.max_images`` test images (PNGs, grid, latency, :meth:`edit_metrics`)."""
        from diffedit_lab.methods.editing import edit_pass

        self.ensure_used(ctx)
        return edit_pass(self, ctx, "edit", self.cfg.edit, self.edit_metrics())

    def stage_eval(self, ctx: StageContext) -> dict[str, float] | None:
        """Score the edits of the first ``eval.max_images`` test images with ``eval.metrics`` (no PNGs), or two
        folders of images (``eval.folder.pred``/``ref``)."""
        from diffedit_lab.methods.editing import edit_pass

        e = self.cfg.eval
        if self.scores_folder(self.stage, self.cfg):
            return self.evaluate_folder(ctx, e.folder)
        self.ensure_used(ctx)
        return edit_pass(self, ctx, "eval", e, e.metrics, write=False)

    @classmethod
    def pipeline_stages(cls, cfg: Any) -> tuple[str, ...]:
        """The training stages whose products a pipeline loads (default: what ``EDIT_STAGE`` uses)."""
        stage = next((s for s in cls.STAGES if s.name == cls.EDIT_STAGE), None)
        uses = cls.stage_uses(stage, cfg) if stage is not None else None
        return (uses,) if uses else ()

    # --- randomness that resumes ----------------------------------------------------------------------------
    def rng(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The method's named random stream (timesteps, noise, …) on ``device`` (default CPU).

        Seeded from the run's seed (``seed_everything``) and the name, saved in every checkpoint and restored on
        resume — so a run killed at any step and resumed draws exactly the numbers an uninterrupted run draws
        (the global RNG is not part of Lightning checkpoints). Use it for every draw inside a training step.
        """
        device = torch.device(device or "cpu")
        key = f"{name}@{device.type}"
        gen = self._rngs.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            if key in self._pending_rng_states:
                gen.set_state(self._pending_rng_states.pop(key))
            else:  # each DDP rank its own stream (rank 0: the single-process numbers)
                rank, _ = rng_utils.world(self)
                gen.manual_seed((torch.initial_seed() + zlib.crc32(name.encode()) + 1_000_003 * rank) % 2**63)
            self._rngs[key] = gen
        return gen

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.stage is not None:
            checkpoint["diffedit_stage"] = self.stage.name
        states = {k: g.get_state() for k, g in self._rngs.items()}
        checkpoint["diffedit_rng"] = {**self._pending_rng_states, **states}
        ranks = rng_utils.gather_states(self, states)  # every rank's streams (only rank 0 writes the file)
        if ranks:
            checkpoint["diffedit_rng_ranks"] = ranks

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        ranks = checkpoint.get("diffedit_rng_ranks")
        rank, _ = rng_utils.world(self)
        for key, state in checkpoint.get("diffedit_rng", {}).items():
            own = rng_utils.own_state(ranks, key, self)
            if own is not None:
                state = own
            elif rank > 0:  # saved by another world size (or single-process): a distinct stream for this rank
                seed = rng_utils.rank_seed(torch.initial_seed(), rank, key, self.global_step)
                state = torch.Generator(device=key.rsplit("@", 1)[-1]).manual_seed(seed).get_state()
            if key in self._rngs:
                self._rngs[key].set_state(state)
            else:
                self._pending_rng_states[key] = state  # applied when the stream is first used

    # --- trained weights --------------------------------------------------------------------------------------
    def ensure_trained(self, ctx: StageContext, train_stage: str = "fit") -> None:
        """Inference without ``train_stage`` in this invocation: load its product once (lookup in
        :meth:`trained_weights_path`) through the method's :meth:`load_trained`."""
        if train_stage in self._trained_stages:
            return
        path = self.trained_weights_path(ctx, train_stage)
        self.load_trained(path, train_stage)
        self._trained_stages.add(train_stage)
        log.info("loaded the trained %s from %s", train_stage, path)

    def mark_trained(self, train_stage: str) -> None:
        """``train_stage`` trained (or loaded) in this invocation: later stages use the weights in memory."""
        self._trained_stages.add(train_stage)

    def build_trained(self, train_stage: str) -> None:
        """Build the networks ``train_stage`` trains, untrained (what loading their weights fills in; default:
        they exist from ``__init__``)."""

    def load_trained(self, path: Path, train_stage: str) -> None:
        """Load the product of ``train_stage`` from ``path`` — an artifact (:mod:`~diffedit_lab.utils.artifacts`),
        an old export or a Lightning checkpoint of this method — into this module's own tensors (strict on what
        the file holds: every entry must exist here with its shape). Methods whose exports hold more override it."""
        from diffedit_lab.utils.artifacts import load_artifact

        what = f"trained {train_stage} weights of {type(self).__name__}"
        state = load_artifact(path, what).state
        own = self.state_dict()
        unknown = [k for k in state if k not in own or own[k].shape != state[k].shape]
        if not state or unknown:
            raise UserError(f"{what}: '{path}' does not match this model ({len(unknown)} entries differ, e.g. "
                            f"{unknown[:3]})")  # fmt: skip
        self.load_state_dict(state, strict=False)

    def trained_weights_path(self, ctx: StageContext, train_stage: str) -> Path:
        """Where an inference stage finds what ``train_stage`` produced when it did not run in this invocation
        (the same lookup as the start-up check: ``method.<weights_key>``, ``ckpt_path``, the run dir's export)."""
        return self.trained_file(self.cfg, ctx.run_dir, ctx.ckpt_path, train_stage)

    # --- metrics --------------------------------------------------------------------------------------------
    def metric_suite(self, metrics: Sequence[str], e: Any, n: int | None = None, text: bool = True) -> Callable:
        """The one way a stage builds its metric suite: a factory (called inside the predict loop, on the right
        device) of the :class:`MetricSuite` of ``metrics`` with the FID/LPIPS settings of ``e`` (an
        ``EditEvalConfig``-like node), the method's CLIP (text metrics, ``prompt.source_text → prompt.text`` when
        ``text``) and identity network (dropped with a warning when its weights are absent), and a KID subset no
        larger than the ``n`` images scored."""
        from diffedit_lab.evaluation.suite import ALL_METRICS, MetricSuite

        wanted = [m for m in metrics if m in ALL_METRICS]  # method-own scalars (latent_l2, eps_mse) are not suite's
        if "identity" in wanted and self.identity is None:
            wanted.remove("identity")
        p = getattr(self.cfg, "prompt", None)
        kid = int(getattr(e, "kid_subset_size", 1000) or 1000)
        kid = max(2, min(kid, int(n))) if n else kid
        uses_clip = bool({"clip_dir", "clip_score"} & set(wanted))
        return lambda: MetricSuite(
            wanted,
            fid_feature=e.fid_feature,
            fid_weights_path=e.fid_weights_path,
            lpips_backbone_path=getattr(e, "lpips_backbone_path", None),
            kid_subset_size=kid,
            clip=(lambda: self.clip) if uses_clip else None,
            src_text=(p.source_text or None) if p is not None and text else None,
            tgt_text=(p.text or None) if p is not None and text else None,
            identity_encoder=(lambda: self.identity) if "identity" in wanted else None,
        )

    # --- evaluation of any folders ------------------------------------------------------------------------
    def evaluate_folder(self, ctx: StageContext, folder_cfg) -> dict[str, float]:
        """``stage=eval`` on any outputs: score ``folder.pred`` against ``folder.ref`` (paired when names match),
        with the method's suite (:meth:`metric_suite`: its CLIP and prompt texts, its identity network).

        Works for images made by any tool, so results of other methods can be scored with the same metrics.
        """
        from diffedit_lab.evaluation.folder_eval import evaluate_folders

        if not folder_cfg.ref:
            raise UserError("eval.folder.pred is set but eval.folder.ref is not: give the reference/source folder")
        result = evaluate_folders(
            folder_cfg.pred,
            folder_cfg.ref,
            self.metric_suite(folder_cfg.metrics, folder_cfg)(),
            resolution=folder_cfg.resolution,
            batch_size=int(folder_cfg.batch_size),
            device=ctx.device,
        )
        metrics = {f"eval/{k}": float(v) for k, v in result.items()}
        ctx.write_metrics(metrics)
        return metrics
