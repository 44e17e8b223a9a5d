"""The one place that knows W&B: a Lightning ``WandbLogger`` that turns a run into a dashboard a researcher can use.

* the run: the composed config (nested) as the run config, with parameter counts, ``random_weights`` and the git
  commit; a multirun's jobs in one group of their own, each named after its swept overrides (``lr=0.001``);
  ``job_type`` = the stages run;
* keys and axes: each stage's metrics under its own prefix — training curves as ``<stage>/train/<name>`` against
  ``<stage>/step``, stage results as ``<stage>/<name>`` — and one monotone ``trainer/global_step`` over the whole
  run (training stages add their steps; an inference stage logs at the steps its model was trained for);
  summaries are the best value where one exists (``define_metric(summary="min"|"max")``);
* media: captioned images (stage, prompt, image ids), tables of per-image rows (file paths and tensors become
  ``wandb.Image``), line plots of tables;
* artifacts: each exported ``*.safetensors`` as a versioned ``model`` artifact (its JSON config as metadata), and
  with ``log_model`` the stage's Lightning checkpoints too (offline included); results files as run files;
* offline runs self-contained: artifact staging and media live inside the ``offline-run-*`` folder.

Methods never see this module: the runner, the stage context and the writers call duck-typed hooks
(``begin_run``, ``stage_started``, ``log_results``, ``log_rows``, ``nested``, ``finish_run``) that other loggers lack.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)

MIN_BEST = ("fid", "kid", "loss", "lpips", "l1", "l2", "mse", "latency")
MAX_BEST = ("clip", "identity", "psnr", "ssim", "acc", "hqs")
RESULT_FILES = ("config_resolved*.yaml", "metrics.json", "metrics.csv", "**/scores.csv", "**/selected.json",
                "comparison.csv", "comparison.md", "report.md", "**/table.md")  # fmt: skip
LOG_MODEL = (False, True, "all")


def best_summary(key: str) -> str | None:
    """``min``/``max`` for metrics with a best value (by their last name segment), else None (last value)."""
    name = key.rsplit("/", 1)[-1].lower()
    if "lr-" in name or name in ("epoch", "step", "num_images") or name.endswith(("_s", "_step", "_t")):
        return None
    if any(w in name for w in MAX_BEST):
        return "max"
    if any(w in name for w in MIN_BEST):
        return "min"
    return None


def curve_key(stage: str, key: str) -> str:
    """A training-loop metric of ``stage`` on the dashboard: ``train/loss`` → ``fit/train/loss``, ``val/fid`` →
    ``fit/val/fid``, ``classifier/acc`` → ``train_classifier/train/acc``, ``lr-AdamW`` → ``fit/train/lr-AdamW``."""
    rest = key
    for head in (f"{stage}/", "train/", "classifier/"):
        if rest.startswith(head):
            rest = rest[len(head) :]
            break
    return f"{stage}/{rest}" if rest.startswith("val/") else f"{stage}/train/{rest}"


def result_key(stage: str | None, key: str) -> str:
    """A stage's result on the dashboard: ``time/``, ``run/`` and keys already under the stage stay; others move
    under the stage (``edit/l1`` written by Rectifier's ``apply`` → ``apply/edit/l1``)."""
    if stage is None or key.startswith(("time/", "run/", f"{stage}/")):
        return key
    return f"{stage}/{key}"


def is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@dataclass
class Scope:
    """Where a logger writes: a key prefix (``""``; ``edit/smiling/`` for a nested Asyrp run), its current stage and
    the training steps done before it (the run-wide axis)."""

    prefix: str = ""
    stage: str | None = None
    train: bool = False
    offset: int = 0
    last_step: int = 0


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5)  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parameter_counts(obj: Any) -> dict[str, int]:
    import torch

    if not isinstance(obj, torch.nn.Module):
        return {}
    params = list(obj.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


class DashboardLogger(WandbLogger):
    """``WandbLogger`` plus the run-level hooks above. ``log_model``: false, true (each training stage's last
    checkpoint as a ``model`` artifact) or ``all`` (every checkpoint) — logged by this class, so it works offline."""

    def __init__(self, log_model: bool | str = False, **kwargs: Any) -> None:
        super().__init__(log_model=False, **kwargs)  # Lightning's own log_model refuses offline runs
        self.checkpoints = log_model
        self.scope = Scope()
        self._defined: set[str] = set()
        self._skipped: set[str] = set()
        self._caption = ""
        self._task = "run"
        self._saved_env: dict[str, str | None] = {}
        self._run_step = 0
        self._nested_offset = 0  # training steps of nested runs so far (their axis continues across prompts)

    # --- the run -----------------------------------------------------------------------------------------------
    def begin_run(self, cfg: Any, stages: list[str], method: Any = None) -> None:
        """Name, group, job type and config of the run (before W&B starts it), from the composed ``cfg``."""
        from omegaconf import OmegaConf

        from diffedit_lab.utils.run_naming import run_identity

        config = OmegaConf.to_container(cfg, resolve=True)
        config.pop("hydra", None)
        config["params"] = parameter_counts(method)
        config["random_weights"] = bool(cfg.get("random_weights", False))
        config["git_commit"] = git_commit()
        group, name = run_identity(cfg)
        init = self._wandb_init  # read by WandbLogger.experiment when it starts the run
        init.setdefault("config", {}).update(config)
        init["group"] = init.get("group") or group
        init["name"] = init.get("name") or name
        init["job_type"] = init.get("job_type") or "+".join(stages)
        self._task = str(cfg.get("task_name") or "run")
        prompt = (cfg.get("method") or {}).get("prompt") or {}
        self._caption = str(prompt.get("text") or "") if hasattr(prompt, "get") else ""
        self._self_contained()

    def _self_contained(self) -> None:
        """Artifact staging and media inside the offline run folder (``wandb sync`` of a copied run dir finds all)."""
        run = self.experiment
        folder = Path(run.dir).parent
        for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_ARTIFACT_DIR", "artifacts")):
            self._saved_env.setdefault(var, os.environ.get(var))
            os.environ[var] = str(folder / sub)

    def finish_run(self, run_dir: Path, method: Any = None, failed: bool = False) -> None:
        """Results files as run files, the final parameter counts, then finish the W&B run (exit code 1 when
        ``failed``)."""
        import wandb

        if self._experiment is None:
            return
        run = self.experiment
        if method is not None:
            run.config.update({"params": parameter_counts(method)}, allow_val_change=True)
        files = Path(run.dir)
        for pattern in RESULT_FILES:
            for path in sorted(Path(run_dir).glob(pattern)):
                if "wandb" in path.relative_to(run_dir).parts or not path.is_file():
                    continue
                dest = files / "results" / path.relative_to(run_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)  # a copy inside the run folder, not a link to the run dir
                run.save(str(dest), base_path=str(files), policy="now")
        wandb.finish(exit_code=1 if failed else 0)
        for var, value in self._saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value

    # --- stages ------------------------------------------------------------------------------------------------
    def stage_started(self, stage: str, train: bool, scope: Scope | None = None) -> None:
        s = scope or self.scope
        s.stage, s.train, s.last_step = stage, train, 0

    def stage_finished(self, stage: str, run_dir: Path, outputs: tuple[str, ...] = (), scope: Scope | None = None):
        """Exports of the stage as ``model`` artifacts; with ``log_model`` its checkpoints; the run axis moves on."""
        s = scope or self.scope
        for out in outputs:
            path = Path(run_dir) / out
            if path.suffix == ".safetensors" and path.is_file():
                self.log_model_file(path, s.prefix + stage)
        if self.checkpoints and s.train:
            folder = Path(run_dir) / "checkpoints" / stage
            files = sorted(folder.glob("*.ckpt")) if self.checkpoints == "all" else [folder / "last.ckpt"]
            for path in (p for p in files if p.is_file()):
                self.log_model_file(path, s.prefix + stage, name="checkpoint")
        if s.train:
            s.offset += s.last_step
            if s is not self.scope:
                self._nested_offset = s.offset
        if s is self.scope:  # nested runs inside this stage trained too: the run axis goes past their steps
            s.offset, self._nested_offset = s.offset + self._nested_offset, 0
        s.stage, s.train = None, False

    def log_model_file(self, path: Path, stage: str, name: str | None = None) -> None:
        import wandb

        from diffedit_lab.utils.artifacts import read_artifact_config

        raw = f"{self._task}-{stage.replace('/', '-')}-{name or path.stem}"
        meta = {"file": path.name, "stage": stage, **(read_artifact_config(path) or {})}
        artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "_", raw), type="model", metadata=meta)
        artifact.add_file(str(path))
        self.experiment.log_artifact(artifact, aliases=["latest", stage.replace("/", "-")])

    # --- metrics -----------------------------------------------------------------------------------------------
    def _numbers(self, metrics: dict[str, Any]) -> dict[str, float]:
        out = {}
        for k, v in metrics.items():
            if is_number(v):
                out[k] = float(v)
            elif k not in self._skipped:  # once per key
                self._skipped.add(k)
                log.info("W&B: not logging %s=%s (no value: the metric could not be computed here)", k, v)
        return out

    def _define(self, key: str, step_metric: str) -> None:
        if key in self._defined:
            return
        self._defined.add(key)
        run = self.experiment
        if step_metric not in self._defined:
            self._defined.add(step_metric)
            run.define_metric(step_metric)
        summary = best_summary(key)
        run.define_metric(key, step_metric=step_metric, **({"summary": summary} if summary else {}))

    def _send(self, s: Scope, row: dict[str, Any], stage_step: int | None = None) -> None:
        """Log ``row`` on the stage's axis (``<stage>/step``: the training step; in an inference stage the steps its
        model was trained for) and the run's monotone ``trainer/global_step``."""
        if not row:
            return
        axis = f"{s.prefix}{s.stage}/step" if s.stage else "trainer/global_step"
        for key in row:
            self._define(key, axis)
        before = (0 if s is self.scope else self.scope.offset) + s.offset
        if s.train:
            step = int(stage_step or 0)
            s.last_step = max(s.last_step, step)
            run_step = before + step
        else:
            step = run_step = before
        self._run_step = max(self._run_step, run_step)
        extra = {axis: step} if s.stage else {}
        self.experiment.log({**row, **extra, "trainer/global_step": self._run_step})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None, scope: Scope | None = None) -> None:
        """Lightning's training loop (and LR monitor): curves of the current training stage."""
        s = scope or self.scope
        values = self._numbers(dict(metrics))
        if s.stage is None:
            self._send(s, {s.prefix + k: v for k, v in values.items()}, int(step or 0))
            return
        self._send(s, {s.prefix + curve_key(s.stage, k): v for k, v in values.items()}, int(step or 0))

    def log_results(self, metrics: dict[str, Any], step: int | None = None, final: bool = False,
                    scope: Scope | None = None) -> None:  # fmt: skip
        """A stage's results (``ctx.write_metrics``); ``final``: a training stage's final loop values, kept on their
        curves' keys (the curve's last point), apart from what later passes of the stage score."""
        s = scope or self.scope
        values = self._numbers(dict(metrics))
        name = (lambda k: curve_key(s.stage, k)) if final and s.stage else (lambda k: result_key(s.stage, k))
        self._send(s, {s.prefix + name(k): v for k, v in values.items()}, s.last_step)

    # --- media -------------------------------------------------------------------------------------------------
    def caption(self, text: str | None, scope: Scope | None = None) -> str:
        s = scope or self.scope
        head = " · ".join(x for x in (s.prefix + (s.stage or ""), self._caption and f"“{self._caption}”") if x)
        return f"{head}: {text}" if text else head

    def _key(self, key: str, s: Scope) -> str:
        return s.prefix + result_key(s.stage, key)

    def log_image(self, key: str, images: list[Any], step: int | None = None, scope: Scope | None = None,
                  **kwargs: Any) -> None:  # fmt: skip
        import wandb

        s = scope or self.scope
        captions = kwargs.pop("caption", None) or [None] * len(images)
        pictures = [wandb.Image(self._picture(im), caption=self.caption(c, s)) for im, c in zip(images, captions)]
        self._send(s, {self._key(key, s): pictures}, step if step is not None else s.last_step)

    @staticmethod
    def _picture(value: Any) -> Any:
        """A file path as a path; a (3,H,W) tensor in [-1, 1] as an HWC uint8 array."""
        if isinstance(value, str | Path):
            return str(value)
        if hasattr(value, "detach"):
            x = ((value.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
            return x.permute(1, 2, 0).numpy()
        return value

    def log_rows(self, key: str, rows: list[dict[str, Any]], line: tuple[str, list[str]] | None = None,
                 scope: Scope | None = None) -> None:  # fmt: skip
        """A ``wandb.Table`` of ``rows`` (paths and image tensors → captioned images; NaN → empty); ``line``:
        ``(x, [y, …])`` also plots those columns against ``x``."""
        import wandb

        s = scope or self.scope
        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        table = wandb.Table(columns=columns)
        for r in rows:
            label = str(r.get("image", r.get(columns[0], "")))
            table.add_data(*[self._cell(r.get(c), f"{label} ({c})", s) for c in columns])
        row: dict[str, Any] = {self._key(key, s): table}
        if line is not None:
            x, ys = line
            xs = [r[x] for r in rows]
            series = [[float(r[y]) if is_number(r.get(y)) else None for r in rows] for y in ys]
            row[self._key(f"{key}_plot", s)] = wandb.plot.line_series(xs=xs, ys=series, keys=list(ys), title=key,
                                                                      xname=x)  # fmt: skip
        self._send(s, row, s.last_step)

    def _cell(self, value: Any, label: str, s: Scope) -> Any:
        import wandb

        if isinstance(value, Path) or hasattr(value, "detach"):
            return wandb.Image(self._picture(value), caption=self.caption(label, s))
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    # --- nested runs (SDFT's Asyrp edits) ------------------------------------------------------------------------
    def nested(self, prefix: str) -> NestedLogger:
        return NestedLogger(self, Scope(prefix=prefix.rstrip("/") + "/", offset=self._nested_offset))


class NestedLogger(Logger):
    """A run inside this run (one Asyrp prompt of SDFT's ``edit``): every key under ``prefix``, the same W&B run."""

    def __init__(self, parent: DashboardLogger, scope: Scope) -> None:
        super().__init__()
        self.parent, self.scope = parent, scope

    @property
    def name(self) -> str:
        return self.parent.name

    @property
    def version(self) -> str:
        return self.parent.version

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the nested method's config is part of the run config already

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.parent.log_metrics(metrics, step, scope=self.scope)

    def log_results(self, metrics: dict[str, Any], step: int | None = None, final: bool = False) -> None:
        self.parent.log_results(metrics, step, final, scope=self.scope)

    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self.parent.log_image(key, images, step, scope=self.scope, **kwargs)

    def log_rows(self, key: str, rows: list[dict[str, Any]], line=None) -> None:
        self.parent.log_rows(key, rows, line, scope=self.scope)

    def stage_started(self, stage: str, train: bool) -> None:
        self.parent.stage_started(stage, train, scope=self.scope)

    def stage_finished(self, stage: str, run_dir: Path, outputs: tuple[str, ...] = ()) -> None:
        self.parent.stage_finished(stage, run_dir, outputs, scope=self.scope)
