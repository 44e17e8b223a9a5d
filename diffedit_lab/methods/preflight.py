"""Start-up checks that see the whole request — which stages run, in which run dir, on which data — run once,
before the FIRST stage starts, before anything is built or written.

A method declares its checks once: ``check_<stage>(cfg, pre)`` classmethods for the stages that need more than
the shared rules, which :meth:`EditingMethod.check_stages` calls for every requested stage. The shared rules live
here: a training stage never silently replaces its finished output (:func:`protect_outputs`), and an inference
stage finds the trained weights it will load when their training stage does not run (:func:`find_trained`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffedit_lab.callbacks.checkpoint_io import latest_checkpoint
from diffedit_lab.diffusion.priors.shape import PriorShape, describe_prior
from diffedit_lab.methods.stage import Stage, launch_rank
from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Preflight:
    """What start-up checks may look at; nothing here is built or written."""

    run_dir: Path
    stages: list[Stage]
    declared: tuple[Stage, ...] = ()
    datamodule: Any = None
    ckpt_path: str | None = None
    overwrite: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. a prior's shape, read once for several checks

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def runs(self, name: str) -> bool:
        return name in self.names

    def prior_shape(self, node: Any) -> PriorShape | None:
        """The architecture of the pixel prior ``node`` builds, read once (no weights: see :mod:`..priors.shape`)."""
        key = repr(node)
        if key not in self.cache:
            self.cache[key] = describe_prior(node)
        return self.cache[key]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.declared if s.name == name), None)

    def resumes(self, stage: Stage) -> bool:
        """The stage continues its own checkpoint rather than starting over."""
        if self.ckpt_path == "last":
            return True
        if self.ckpt_path is None:
            return False
        own = (self.run_dir / "checkpoints" / stage.name).resolve()
        return Path(self.ckpt_path).expanduser().resolve().parent == own


def finished_outputs(stage: Stage, run_dir: Path) -> list[Path]:
    """What ``stage`` left in ``run_dir``: its exported files and its checkpoint folder."""
    found = [run_dir / o for o in stage.finished if (run_dir / o).exists()]
    ckpts = run_dir / "checkpoints" / stage.name
    if latest_checkpoint(ckpts) is not None:
        found.append(ckpts)
    return found


def protect_outputs(pre: Preflight) -> list[Path]:
    """A training stage about to start fresh in a run dir that holds its output stops with one line, unless
    ``overwrite=true`` (then those paths are returned, to be moved aside by :func:`move_aside`)."""
    if launch_rank() != 0:
        return []  # DDP workers start after rank 0 moved things aside; only rank 0 decides
    doomed: list[Path] = []
    for stage in pre.stages:
        if not stage.train or pre.resumes(stage):
            continue
        found = finished_outputs(stage, pre.run_dir)
        if not found:
            continue
        if not pre.overwrite:
            shown = ", ".join(str(p.relative_to(pre.run_dir)) for p in found)
            raise UserError(
                f"stage {stage.name} already has trained output in {pre.run_dir} ({shown}): resume it with "
                "ckpt_path=last, choose a new run dir (hydra.run.dir=…), or pass overwrite=true (the old files "
                "are moved aside, not deleted)"
            )
        doomed.extend(found)
    return doomed


def move_aside(paths: list[Path]) -> list[Path]:
    """Rename each path to ``<name>.replaced-<time>`` beside it (never delete a user's results)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in paths:
        target = path.with_name(f"{path.name}.replaced-{stamp}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
            n += 1
        path.rename(target)
        log.warning("overwrite=true: moved %s aside to %s", path, target.name)
        moved.append(target)
    return moved


def config_value(cfg: Any, dotted: str) -> Any:
    """``cfg.a.b`` for ``"a.b"`` (None when any part is missing)."""
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part, None) if not isinstance(value, dict) else value.get(part)
        if value is None:
            return None
    return value


def find_trained(cfg: Any, run_dir: Path, ckpt_path: str | None, train: Stage) -> Path | None:
    """Where the product of training stage ``train`` is, when it does not run in this invocation: the file given
    by ``method.<train.weights_key>``, then ``ckpt_path`` (``last`` = the newest of ``checkpoints/<train>/``;
    an explicit path counts only for the stage it belongs to), then the stage's export in the run dir, then its
    own newest checkpoint. One lookup for start-up checks and for the stages themselves."""
    given = config_value(cfg, train.weights_key)
    if isinstance(given, str) and given:
        return Path(given).expanduser()  # existence and readability are checked by the caller
    candidates: list[Path | None] = []
    if ckpt_path == "last":
        candidates.append(latest_checkpoint(run_dir / "checkpoints" / train.name))
    elif ckpt_path:
        candidates.append(Path(ckpt_path).expanduser())
    candidates += [run_dir / o for o in train.export]
    candidates.append(latest_checkpoint(run_dir / "checkpoints" / train.name))
    return next((c for c in candidates if c is not None and c.is_file()), None)


def missing_trained(train: Stage, what: str) -> UserError:
    export = train.outputs[0] if train.outputs else f"checkpoints/{train.name}/last.ckpt"
    return UserError(
        f"no trained {what}: run stage {train.name} first (stage=[{train.name},…]), or pass "
        f"method.{train.weights_key}=<run>/{export} (or ckpt_path=<run>/checkpoints/{train.name}/last.ckpt)"
    )


def preflight_data(node: Any, key: str) -> Any:
    """A datamodule config a later stage uses (a translation source, photos to edit): instantiated (cheap) and
    checked like the run's own ``data`` — root, list files, at least one image — so it fails at start-up."""
    from omegaconf import DictConfig, OmegaConf

    from diffedit_lab import checks
    from diffedit_lab.utils.instantiate import instantiate

    if isinstance(node, dict):
        node = OmegaConf.create(node)
    if isinstance(node, DictConfig):  # the keys every datamodule shares, as for the run's own `data`
        checks.check_data(node, key)
        checks.check_data_options(node, key)
    try:
        dm = instantiate(node)
    except UserError as exc:
        raise UserError(f"{key}: {exc}") from None
    if hasattr(dm, "preflight"):
        try:
            dm.preflight()
        except UserError as exc:
            raise UserError(f"{key}: {exc}") from None
    return dm


def check_eval_folders(folder: Any, pre: Preflight) -> None:
    """``eval`` scoring ``folder.pred`` against ``folder.ref`` (two folders of images): both hold images now, as
    :func:`~diffedit_lab.evaluation.folder_eval.evaluate_folders` will list them (names only, no image read). A
    folder inside the run dir that an earlier stage of this invocation may write is left to that stage."""
    from diffedit_lab.evaluation.folder_eval import list_images

    eval_at = pre.names.index("eval") if pre.runs("eval") else 0
    run_dir = pre.run_dir.expanduser().resolve()
    for name, what in (("pred", "prediction"), ("ref", "reference")):
        value = getattr(folder, name, None)
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if eval_at > 0 and path.is_relative_to(run_dir):
            continue
        try:
            list_images(path, what)
        except UserError as exc:
            raise UserError(f"method.eval.folder.{name}={value}: {exc}") from None


def check_within(shape: PriorShape | None, **steps: int | None) -> None:
    """Sampler step counts (key → value, ``__`` for ``.``) must not exceed the prior's T (read from its config)."""
    if shape is None:
        return
    T = shape.num_train_timesteps
    for key, value in steps.items():
        if value is not None and int(value) > T:
            raise UserError(f"method.{key.replace('__', '.')}={value}: expected <= {T} (the prior's T)")
