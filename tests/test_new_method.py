"""Adding a method = its module + its config folder: a toy method from outside the package runs through the same
runner, trainer/callback configs and fixtures as SDD (see tests/toy/module.py)."""

from __future__ import annotations

import json

import pytest
import torch

from diffedit_lab.run import run
from diffedit_lab.utils.errors import UserError
from tests.helpers import ROOT

TOY_CONF = ROOT / "tests" / "toy" / "conf"
SEARCH = f"hydra.searchpath=[file://{TOY_CONF}]"


@pytest.fixture
def toy(compose, tmp_path):
    from tests.helpers import tiny_overrides

    def _compose(*overrides: str):
        base = tiny_overrides(tmp_path / "run", tmp_path / "cache", method="toy")
        return __import__("diffedit_lab.utils.config", fromlist=["compose_config"]).compose_config(
            [SEARCH, *base, *overrides]
        )

    return _compose


def test_toy_method_runs_two_training_stages_and_predict(toy, tmp_path):
    out = tmp_path / "run"
    result = run(toy())
    method = result.objects["method"]
    assert [s.name for s in result.objects["stages"]] == ["shift", "scale", "edit", "eval"]
    # each training stage had its own trainer, optimiser, max_steps and checkpoint folder
    assert method.optimizers_used == ["Adam", "SGD"]
    shift = torch.load(out / "checkpoints" / "shift" / "last.ckpt", weights_only=True)
    scale = torch.load(out / "checkpoints" / "scale" / "last.ckpt", weights_only=True)
    assert shift["global_step"] == 6 and scale["global_step"] == 4  # the second stage counts from 0
    assert shift["diffedit_stage"] == "shift" and scale["diffedit_stage"] == "scale"
    assert (out / "checkpoints" / "shift" / "step_000003.ckpt").is_file()
    assert (out / "checkpoints" / "scale" / "step_000002.ckpt").is_file()
    # the shift stage trained only the offset, the scale stage only the gain
    assert float(shift["state_dict"]["gain"]) == 1.0 and float(shift["state_dict"]["offset"]) != 0.0
    assert float(scale["state_dict"]["offset"]) == float(shift["state_dict"]["offset"])
    # edit and eval came from the base (the toy wrote only edit_batch): PNGs, grid, latency, its metric suite
    metrics = json.loads((out / "metrics.json").read_text())
    pngs = len(list((out / "edit" / "edited").glob("*.png")))
    assert metrics["edit/num_images"] == metrics["eval/num_images"] == pngs >= 2  # the whole (small) test split
    assert (out / "edit" / "grid.png").is_file() and metrics["edit/latency_ms_per_image"] > 0
    assert {"edit/l1", "eval/l1", "eval/psnr"} <= set(metrics) and metrics["edit/l1"] == metrics["eval/l1"]
    assert not (out / "eval").exists()  # eval scores, it writes no images


def test_toy_method_gets_a_python_pipeline_for_free(toy, tmp_path):
    """``load_pipeline(run_dir)``: the config of the run, its trained weights (found in checkpoints/scale/ by the
    base's lookup, loaded by the base's loader), the method's edit_batch — no pipeline code in the toy."""
    from diffedit_lab import load_pipeline

    out = tmp_path / "run"
    trained = run(toy("stage=[shift,scale]")).objects["method"]
    pipe = load_pipeline(out, device="cpu")
    assert float(pipe.method.gain) == float(trained.gain) and float(pipe.method.offset) == float(trained.offset)
    x = torch.linspace(-0.5, 0.5, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    res = pipe(x)
    torch.testing.assert_close(res.images, (trained.gain * x + trained.offset).clamp(-1, 1).detach())
    assert res.inputs.shape == x.shape and res.latency_ms_per_image > 0


def test_toy_method_config_is_validated_and_debug_limit_applies(toy, tmp_path):
    with pytest.raises(UserError, match=r"method.goal=3.0: expected a value >= -1 and <= 1"):
        run(toy("method.goal=3"))
    with pytest.raises(UserError, match=r"method.shift.steps=0"):
        run(toy("method.shift.steps=0"))
    with pytest.raises(UserError, match="stage=select: method 'toy' has no stage 'select'"):
        run(toy("stage=select"))
    run(toy("debug=limit", "logger=none", "stage=[shift,scale]"))  # trainer.max_steps=3 caps every stage
    out = tmp_path / "run"
    assert torch.load(out / "checkpoints" / "shift" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert torch.load(out / "checkpoints" / "scale" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_toy_resume_picks_each_stage_up_from_its_own_folder(toy, tmp_path):
    run(toy("stage=[shift,scale]", "method.shift.steps=3", "method.scale.steps=2"))
    result = run(toy("stage=[shift,scale]", "ckpt_path=last"))
    out = tmp_path / "run"
    assert torch.load(out / "checkpoints" / "shift" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert torch.load(out / "checkpoints" / "scale" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert result.objects["method"].optimizers_used == ["Adam", "SGD"]


def test_toy_method_gets_a_bench_entry_for_free(tmp_path):
    """``make bench`` times every method's pipeline (``edit.pipeline.<m>``) from its tiny variant: the toy too."""
    from experiments.bench.harness import Bench
    from experiments.bench.pipelines import bench_pipelines

    bench = Bench(repeats=1, warmup=0)
    out = bench_pipelines(bench, tmp_path, methods=["toy"], overrides=[SEARCH])
    assert out == {"methods": ["toy"], "skipped": {}}
    entry = bench.entry("edit.pipeline.toy", "tiny")
    assert entry["batch"] == 2 and entry["inputs"] == ["images"] and entry["median_ms"] > 0
