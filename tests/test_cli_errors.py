"""Bad input through the CLI entry: exit status 2, one ``error:`` line naming the value, no traceback, and nothing
a user already has in the run dir is touched (issue: hardening)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import cli_in_process

CASES = [
    # (override(s), what the error line must mention)
    (["method.fit.steps=abc"], "method.fit.steps='abc'"),
    (["method.fit.steps=-5"], "method.fit.steps=-5"),
    (["method.optim.lr=-1"], "method.optim.lr"),
    (["method.fit.t_sampling=bogus"], "method.fit.t_sampling"),
    (["method.selection.score=foo"], "method.selection.score"),
    (["method.selection.rule=sideways"], "method.selection.rule"),
    (["method.mapper.levels.coarse=maybe"], "method.mapper.levels"),
    (["method.eval.metrics=[fid,bogus]"], "bogus"),
    (["prompt.text="], "prompt"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.num_workers=-1"], "data.num_workers=-1"),
    (["trainer.devices=abc"], "trainer.devices"),
    (["trainer.precision=17"], "trainer.precision"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0"),
    (["trainer.max_steps=-3"], "trainer.max_steps=-3"),
    (["trainer.accelerator=quantum"], "trainer.accelerator"),
    (["prompt=nonexistent"], "prompt/nonexistent"),
    (["data=nosuch"], "data/nosuch"),
    (["method.foo=1"], "method.foo"),
    (["method.fit.steps=[1"], "method.fit.steps=[1"),
    (["stage=sample"], "stage=sample"),
    (["ckpt_path=/no/such/last.ckpt"], "/no/such/last.ckpt"),
    (["data.codes=/no/such/codes.pt"], "/no/such/codes.pt"),
    (["generator.checkpoint=/no/such/stylegan2.pt"], "generator.checkpoint=/no/such/stylegan2.pt"),
    (["generator.checkpoint=RANDOM", "stage=select"], "random.bin"),
    (["data=celebahq", "data.root=/no/such/celebahq"], "/no/such/celebahq"),
    (["data=celebahq", "data.num_test=8"], "data.num_test=8"),
    (["data=celebahq", "data.split_mode=sideways"], "data.split_mode"),
    (["data.codes=RANDOM", "stage=select"], "W+ codes"),
    (
        ["method.weights=/no/such/mapper.safetensors", "stage=edit"],
        "method.weights=/no/such/mapper.safetensors: no such file",
    ),
    (["method.eval.fid_feature=inceptoin"], "fid_feature='inceptoin': expected 'inception'"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run dir with a user's results in it: a bad command aimed at it must leave them as they are."""
    run = tmp_path_factory.mktemp("old_run")
    for name, data in {
        "checkpoints/fit/last.ckpt": b"trained for hours",
        "mapper.safetensors": b"exported mapper",
        "metrics.json": b'{"eval/fid": 12.3}',
        "config_resolved.yaml": b"seed: 0\n",
    }.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    (run / "random.bin").write_bytes(os.urandom(4096))
    return run


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in run.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


@pytest.mark.parametrize(("overrides", "mention"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(overrides, mention, run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    overrides = [o.replace("RANDOM", str(run_dir / "random.bin")) for o in overrides]
    before = _snapshot(run_dir)
    code, err = cli_in_process(
        "method=sdd/tiny",
        *overrides,
        "logger=none",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.enable_progress_bar=false",
    )
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert lines and lines[-1].startswith("error:"), err[-2000:]
    assert sum(line.startswith("error:") for line in lines) == 1
    if mention is not None:
        assert mention in lines[-1], lines[-1]
    assert "weights_only" not in lines[-1]
    after = _snapshot(run_dir)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file in the run dir changed"
