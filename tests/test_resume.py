"""Bit-exact resume after SIGKILL: a training run killed once a checkpoint exists, then resumed with the documented
command (``ckpt_path=last hydra.run.dir=<run>``), ends with exactly the weights and optimiser state of an
uninterrupted run (CPU). Each method that trains adds a row to ``CASES``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, tiny_overrides

# method, its training stage, overrides (stage list, steps, checkpoint interval), the checkpoint to wait for
CASES = {
    "sdd": (
        "fit",
        ["stage=[select,fit]", "method.fit.steps=24", "method.fit.checkpoint_every=6", "method.fit.preview_every=0"],
        "step_000006.ckpt",
    ),
    "sdft": (  # the EMA, the t/ε stream and the FID monitor's state (evaluations at 4, 8, …) across the kill
        "fit",
        ["stage=fit", "method.fit.steps=16", "method.fit.checkpoint_every=4", "method.fit.fid_every=4"],
        "step_000004.ckpt",
    ),
    "rectifier": (  # the t/ε streams and the StepLR schedule (decays at 2, 4, …) across the kill
        "fit",
        ["stage=fit", "method.fit.steps=8", "method.fit.checkpoint_every=2", "method.fit.lr_decay.every=2"],
        "step_000002.ckpt",
    ),
    "asyrp": (  # the resumable order of the inverted pairs; 6 epochs × 2 trajectories × 2 steps (one per timestep)
        "fit",
        ["stage=fit", "method.fit.epochs=6", "method.fit.checkpoint_every=1", "method.fit.lr_step_epochs=2"],
        "step_000004.ckpt",
    ),
}


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "diffedit_lab", *args]


def _kill_once_saved(args: list[str], ckpt: Path, timeout: float = 240.0) -> int:
    """Start the CLI, SIGKILL it as soon as ``ckpt`` exists; the step the run had reached is returned."""
    proc = subprocess.Popen(_cli(args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ckpt.is_file():
            if proc.poll() is not None:
                pytest.fail(f"the run ended before {ckpt.name} was written: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {ckpt.name} after {timeout}s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return torch.load(ckpt, weights_only=False, map_location="cpu")["global_step"]


def _final(run_dir: Path, stage: str) -> dict:
    return torch.load(run_dir / "checkpoints" / stage / "last.ckpt", weights_only=False, map_location="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_sigkill_then_resume_is_bit_exact(method, tmp_path):
    stage, overrides, wait_for = CASES[method]
    cache = tmp_path / "cache"

    def command(run_dir: Path) -> list[str]:
        return [*tiny_overrides(run_dir, cache, method=method), *overrides, f"hydra.run.dir={run_dir}"]

    straight = tmp_path / "straight"
    done = subprocess.run(_cli(command(straight)), cwd=ROOT, env=_env(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    killed = tmp_path / "killed"
    args = command(killed)
    step = _kill_once_saved(args, killed / "checkpoints" / stage / wait_for)
    reference = _final(straight, stage)
    assert 0 < step < reference["global_step"], "the kill must land before the end of training"

    resumed = subprocess.run(_cli([*args, "ckpt_path=last"]), cwd=ROOT, env=_env(), capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    final = _final(killed, stage)
    assert final["global_step"] == reference["global_step"]
    assert final["state_dict"].keys() == reference["state_dict"].keys()
    for k, v in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][k], v), f"{k} differs after resume"
    for a, b in zip(final["optimizer_states"], reference["optimizer_states"], strict=True):
        for pa, pb in zip(a["state"].values(), b["state"].values(), strict=True):
            for key in pa:
                assert torch.equal(torch.as_tensor(pa[key]), torch.as_tensor(pb[key])), f"optimizer {key} differs"
