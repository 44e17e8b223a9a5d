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
    assert [s.name for s in result.objects["stages"]] == ["shift", "scale", "edit"]
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
    # inference went through the predict loop: images written, metrics from the callback
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit/offset"] == pytest.approx(float(method.offset.detach()), abs=1e-6)
    assert metrics["edit/num_images"] == len(list((out / "edit" / "edited").glob("*.png"))) > 0
    assert "edit/l1" in metrics and (out / "edit" / "grid.png").is_file()


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
