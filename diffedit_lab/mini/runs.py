"""Resumable nested runs: each step of ``make mini`` is a run of the project's own runner in a fixed run dir.

A run's stages go through :func:`diffedit_lab.run.run` one invocation per stage, each finished stage marked by
``<run>/.mini/<stage>.done``. Run again after a kill -9, a finished stage is skipped, an interrupted training stage
resumes from its newest checkpoint (``ckpt_path=last``: bit-exact, as every training stage of the project), and an
interrupted inference stage runs again (it only writes files it would write anyway).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from diffedit_lab.callbacks.checkpoint_io import latest_checkpoint
from diffedit_lab.utils.config import compose_config
from diffedit_lab.utils.io import atomic_write

log = logging.getLogger(__name__)

MARKS = ".mini"


def stage_done(run_dir: Path, stage: str) -> bool:
    return (Path(run_dir) / MARKS / f"{stage}.done").is_file()


def run_steps(run_dir: str | Path, overrides: Sequence[str], stages: Sequence[str]) -> dict[str, float]:
    """Run ``stages`` (in order) of the config ``overrides`` in ``run_dir``; returns the run's ``metrics.json``
    (every stage's metrics plus ``time/<stage>_s``, also for stages finished by an earlier invocation)."""
    from diffedit_lab.run import method_class_of, run

    run_dir = Path(run_dir).resolve()
    for stage in stages:
        if stage_done(run_dir, stage):
            continue
        extra = [f"paths.output_dir={run_dir}", f"stage={stage}"]
        cfg = compose_config([*overrides, *extra])
        spec = next((s for s in method_class_of(cfg.method).STAGES if s.name == stage), None)
        if spec is not None and spec.train and latest_checkpoint(run_dir / "checkpoints" / stage) is not None:
            cfg = compose_config([*overrides, *extra, "ckpt_path=last"])  # a kill -9 earlier: resume, bit-exact
            log.info("mini: resuming %s of %s from its last checkpoint", stage, run_dir)
        start = time.perf_counter()
        run(cfg)
        seconds = time.perf_counter() - start
        atomic_write(run_dir / MARKS / f"{stage}.done", lambda tmp, s=seconds: Path(tmp).write_text(f"{s:.1f}\n"))
    return read_metrics(run_dir)


def read_metrics(run_dir: Path) -> dict[str, float]:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def wall_seconds(run_dir: Path, stages: Sequence[str]) -> float:
    """The wall time the stages' invocations took (recorded in their marks), loading included."""
    total = 0.0
    for stage in stages:
        mark = Path(run_dir) / MARKS / f"{stage}.done"
        if mark.is_file():
            total += float(mark.read_text().strip() or 0)
    return total
