"""Helpers shared by tests (importable as ``tests.helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from diffedit_lab.utils.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR


def tiny_overrides(out_dir: Path, cache_dir: Path) -> list[str]:
    """The demo preset, shrunk further: no logger, few steps, tmp dirs, no progress bars."""
    return [
        "experiment=demo",
        "logger=none",
        f"paths.output_dir={out_dir}",
        f"paths.cache_dir={cache_dir}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "prompt.steps=4",
        "method.fit.checkpoint_every=2",
        "method.fit.preview_every=2",
        "method.selection.timesteps=[200,500,800]",
        "method.selection.num_codes=2",
        "method.selection.batch_size=2",
        "method.edit.max_images=4",
        "method.edit.projector_steps=3",
        "method.edit.photos.names=[astronaut,chelsea]",
        "method.eval.max_images=4",
    ]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m diffedit_lab <args>`` from the repo root, offline, captured."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "diffedit_lab", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
