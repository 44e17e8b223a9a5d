"""Hydra multiruns: the selection ablation writes one comparison table; an Optuna sweep runs; SLURM config composes."""

from __future__ import annotations

import csv
import subprocess
import sys

from tests.helpers import ROOT, run_cli, tiny_overrides


def _multirun(args: list[str], timeout: int = 400):
    return run_cli("-m", *args, timeout=timeout)


def _tiny(out, cache_dir) -> list[str]:
    keep = [a for a in tiny_overrides(out, cache_dir) if not a.startswith("paths.output_dir")]
    return [*keep, "stage=[select,fit,eval]", "callbacks=none", f"hydra.sweep.dir={out}"]


def test_selection_ablation_writes_comparison_table(tmp_path, cache_dir):
    out = tmp_path / "ablation"
    res = _multirun(["experiment=sdd_selection_ablation", *_tiny(out, cache_dir)])
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    rules = [r["overrides"] for r in rows]
    assert len(rows) == 4
    for rule in ("random", "above_0.25", "above_0.75", "max"):
        assert any(f"method.selection.rule={rule}" in o for o in rules), rules
    by_rule = {o.split("method.selection.rule=")[1].split()[0]: r for o, r in zip(rules, rows, strict=True)}
    # more permissive thresholds keep at least as many timesteps; max keeps exactly one
    assert float(by_rule["max"]["select/num_selected"]) == 1
    assert float(by_rule["above_0.25"]["select/num_selected"]) >= float(by_rule["above_0.75"]["select/num_selected"])
    assert all(r["eval/clip_dir"] != "" for r in rows)
    assert (out / "comparison.md").is_file()


def test_optuna_sweep_runs(tmp_path, cache_dir):
    out = tmp_path / "optuna"
    res = _multirun(
        [
            "hparams_search=sdd_optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1",
            *_tiny(out, cache_dir),
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "optimization_results.yaml").is_file()


def test_slurm_launcher_config_composes():
    res = subprocess.run(
        [sys.executable, "-m", "diffedit_lab", "hydra/launcher=slurm", "--cfg", "hydra"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "submitit_slurm" in res.stdout or "SlurmLauncher" in res.stdout
