"""``python -m diffedit_lab.mini --quick``: the whole pipeline (evaluator, prior, Rectifier, SDFT variants, SDEdit vs
EGSDE, results file, figures) at a few iterations per step; killed with SIGKILL mid-training and rerun, it
continues from its checkpoints and gives the same numbers as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

REQUIRED = {"paper", "claim", "metric", "higher_is_better", "ours", "baseline", "seeds", "ours_per_seed",
            "baseline_per_seed", "holds"}  # fmt: skip


def _mini(root: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "diffedit_lab.mini", "--quick", "--root", str(root), "--out", str(out),
           "--figures", str(out.parent / "figures")]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_quick_mini_writes_claims_and_figures_and_resumes_after_sigkill(tmp_path):
    a = tmp_path / "a" / "results-mini.json"
    _finish(_mini(tmp_path / "a" / "root", a))
    result = json.loads(a.read_text())
    assert {"commit", "torch", "threads"} <= set(result["env"])
    assert {c["paper"] for c in result["claims"]} == {"rectifier", "sdft", "egsde"}
    for c in result["claims"]:
        assert REQUIRED <= set(c) and len(c["seeds"]) >= 3 and len(c["ours_per_seed"]) == len(c["seeds"])
    for name in ("prior_samples.png", "fewshot.png", "reconstruct.png", "translate.png"):
        assert (a.parent / "figures" / name).is_file()
    assert a.with_suffix(".md").read_text().startswith("| paper |")

    # the same, killed -9 once the prior's first checkpoint exists, then run again
    root_b, b = tmp_path / "b" / "root", tmp_path / "b" / "results-mini.json"
    proc = _mini(root_b, b)
    ckpts, mark = root_b / "prior" / "checkpoints" / "fit", root_b / "prior" / ".mini" / "fit.done"
    deadline = time.time() + 300
    while not (ckpts.is_dir() and any(ckpts.glob("*.ckpt"))) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed_mid_fit = proc.poll() is None and not mark.exists()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert killed_mid_fit, "the prior's fit finished before the kill: nothing to resume"
    assert not b.exists()
    log = _finish(_mini(root_b, b))
    assert "resuming fit" in log
    again = json.loads(b.read_text())
    for x, y in zip(result["claims"], again["claims"], strict=True):
        assert (x["ours_per_seed"], x["baseline_per_seed"]) == (y["ours_per_seed"], y["baseline_per_seed"]), x["metric"]
