"""Helpers shared by tests (importable as ``tests.helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from diffedit_lab.utils.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR


def tiny_overrides(out_dir: Path, cache_dir: Path, method: str = "sdd") -> list[str]:
    """Any method on its own tiny variant (``method=<m>/tiny``, from conf/method/<m>/): no logger, tmp dirs, no
    progress bars. Knows no method's keys."""
    return [
        f"method={method}/tiny",
        "logger=none",
        f"paths.output_dir={out_dir}",
        f"paths.cache_dir={cache_dir}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
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


def cli_in_process(*args: str) -> tuple[int, str]:
    """The CLI entry (``diffedit_lab.__main__.cli``, what ``python -m diffedit_lab`` runs) called in this process
    with ``args`` as its command line: (exit status, captured stderr). Seconds faster than a subprocess, for
    tables of bad inputs."""
    import contextlib
    import io

    from diffedit_lab.__main__ import cli

    err = io.StringIO()
    saved = sys.argv
    sys.argv = ["diffedit_lab", *args]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stderr(err):
            cli()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved
    return int(code or 0), err.getvalue()
