"""`make smoke-real` (experiments/smoke): the paper presets at their real shapes with random weights.

Fast: every preset's capped command composes and passes every start-up check (``prepare``) for the CPU and the GPU
run; the GPU-memory estimate's arithmetic (saved-tensor bytes, half-precision components, optimiser state, the
verdict); `make gpu-check` refuses in one line without CUDA. Slow (``make test-all``): one preset per method family
through the runner at real shapes — each stage its own process — checking the results file it writes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from experiments.smoke import estimate as est
from experiments.smoke.presets import PRESETS
from experiments.smoke.run import check_preset, markdown_table
from experiments.smoke.run import main as smoke_main
from tests.helpers import ROOT


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_composes_and_passes_startup_checks(name, device, tmp_path, cache_dir):
    """The runner's table is what the CLI accepts: each preset's whole stage sequence with its caps, at real
    shapes (``debug=real_shapes``), is composed and checked without building anything."""
    preset = PRESETS[name]
    stages = check_preset(preset, device, tmp_path, extra=[f"paths.cache_dir={cache_dir}"])
    assert stages == preset.stages
    cmd = preset.command(None, device)
    assert "debug=real_shapes" in cmd
    # the training batch is capped on the CPU only: the GPU run keeps the preset's
    assert all((c in cmd) == (device == "cpu") for c in preset.cpu_caps)


def test_every_family_and_paper_preset_is_covered():
    assert {p.family for p in PRESETS.values()} == {"sdd", "sdft", "rectifier", "asyrp", "baselines", "compare"}
    cmds = {n: " ".join(p.command()) for n, p in PRESETS.items()}
    for name in ("sdft_metfaces", "sdft_aahq"):  # the optional stages the paper's tables use
        assert {"train_classifier", "translate", "edit"} <= set(PRESETS[name].stages)
        assert "method.translate.method=egsde" in cmds[name] and "method.edit.prompts=[smiling]" in cmds[name]
    for cmd in cmds.values():  # no Inception / AlexNet weights offline
        for metric in ("fid", "kid", "lpips"):
            assert f",{metric}" not in cmd and f"[{metric}" not in cmd


class _Toy(nn.Module):
    """A method-shaped module: a trained linear layer, then a frozen 'teacher' that runs in fp16 on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        teacher = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).requires_grad_(False)
        object.__setattr__(self, "_frozen", {"teacher": teacher})
        self._smoke_nodes = {"teacher": {"dtype": "auto"}}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.lin.parameters())

    def training_step(self, batch, batch_idx):
        h = torch.tanh(self.lin(batch["x"]))
        return self._frozen["teacher"](h).sum()


def test_estimate_counts_params_grads_optimizer_and_saved_activations():
    toy = _Toy()
    out = est.estimate(toy, lambda b: {"x": torch.randn(b, 8)}, batch_size=2, accumulate=1, precision="32-true")
    gib = est.GIB
    assert out["trainable_params"] == 72 and out["frozen_params"] == 72
    assert out["params_gib"] * gib == 72 * 4 + 72 * 2  # trained fp32, the teacher at fp16 on CUDA
    assert out["grads_gib"] * gib == 72 * 4 and out["optimizer_gib"] * gib == 72 * 8 and out["optimizer"] == "AdamW"
    # saved for backward: x (by the trained linear), tanh(h) (by tanh), the teacher's tanh output in fp16 on CUDA
    # (counted half); weights are parameters, not activations
    assert out["activations_gib"] * gib == 2 * 8 * 4 * (1 + 1 + 0.5)
    assert out["total_gib"] == pytest.approx(
        out["params_gib"] + out["grads_gib"] + out["optimizer_gib"] + out["activations_gib"] + est.CUDA_RESERVE_GIB
    )
    assert out["verdict"] == "fits" and out["fit_settings"] == []


def test_estimate_extrapolates_batches_above_two_from_one_and_two():
    toy = _Toy()
    two = est.estimate(toy, lambda b: {"x": torch.randn(b, 8)}, batch_size=2, accumulate=1, precision="32-true")
    six = est.estimate(toy, lambda b: {"x": torch.randn(b, 8)}, batch_size=6, accumulate=1, precision="32-true")
    assert set(six["activations_measured_gib"]) == {"1", "2"}
    assert six["activations_gib"] == pytest.approx(3 * two["activations_gib"])


def test_verdict_settings_that_fit():
    g = est.GIB
    # 10 GiB fixed, 4 GiB per sample, batch 8 × 2 accumulated: 42 GiB; batch 3 fits (22 GiB) → 3 × 6 = 18 ≥ 16
    v = est.verdict(42 * g, 10 * g, 4 * g, 24 * g, 8, 2, {})
    assert v["verdict"] == "does not fit" and v["largest_batch"] == 3
    assert v["fit_settings"] == ["data.batch_size=2", "trainer.accumulate_grad_batches=8"]  # under 90 %: batch 2
    v = est.verdict(
        30 * g, 26 * g, 4 * g, 24 * g, 1, 1, {"gradient checkpointing": "+prior.gradient_checkpointing=true"}
    )
    assert v["verdict"] == "does not fit" and v["fit_settings"] == ["+prior.gradient_checkpointing=true"]
    assert est.verdict(5 * g, 1 * g, 1 * g, 24 * g, 4, 1, {})["verdict"] == "fits"


def test_gpu_check_refuses_in_one_line_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    proc = subprocess.run([sys.executable, "-m", "experiments.smoke.gpu_check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: make gpu-check needs a CUDA GPU")
    assert smoke_main(["--device", "cuda", "--only", "sdedit_512", "--out", "/dev/null"]) == 2


# --- slow: one preset per family through the runner at real shapes -------------------------------------------------
SLOW = {  # family -> (preset, its cheapest real-shape stage sequence)
    "sdd": ("sdd_cat", "select,fit,edit,eval"),
    "sdft": ("sdft_metfaces", "fit,sample,eval"),
    "rectifier": ("rectifier_church", "fit,reconstruct"),
    "asyrp": ("asyrp_celebahq", "fit,edit,eval"),
    "baselines": ("sdedit_512", "edit,eval"),
}
PRODUCTS = {"sdd": "mapper.safetensors", "sdft": "sdft.safetensors", "rectifier": "rectifier.safetensors",
            "asyrp": "asyrp.safetensors", "baselines": "edit/grid.png"}  # fmt: skip


@pytest.mark.real
@pytest.mark.parametrize("family", list(SLOW))
def test_real_shape_smoke_through_the_runner(family, tmp_path, cache_dir):
    name, stages = SLOW[family]
    out = tmp_path / "smoke.json"
    rc = smoke_main(["--only", name, "--stages", stages, "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
                     f"--set=paths.cache_dir={cache_dir}", "--timeout-s", "1800"])  # fmt: skip
    results = json.loads(out.read_text())
    rec = results["presets"][name]
    assert rc == 0 and rec["status"] == "ok", rec.get("error")
    assert rec["stages_planned"] == stages.split(",") and set(rec["stages"]) == set(rec["stages_planned"])
    for label, s in rec["stages"].items():  # one process per stage, each measured from outside and inside
        assert s["returncode"] == 0 and s["process_wall_s"] > 0 and s["process_peak_rss_mb"] > 100
        assert s["measured"][label]["wall_s"] > 0 and s["metrics"]["run/random_weights"] == 1.0
    assert rec["params"]["frozen"] > 10_000_000  # real shapes: the released architectures
    run_dir = tmp_path / "runs"
    assert list(run_dir.glob(f"*/{name}/{PRODUCTS[family]}"))
    assert not list(run_dir.glob(f"*/{name}/checkpoints"))  # GBs at real size: removed unless --keep
    if family == "baselines":
        assert rec["gpu_estimate"] is None and rec["params"]["trainable"] == 0
        return
    e = rec["gpu_estimate"]
    assert rec["params"]["trainable"] > 0 and e["trainable_params"] == rec["params"]["trainable"]
    assert e["verdict"] in {"fits", "tight", "does not fit"} and e["activations_gib"] > 0
    assert e["batch_size"] == PRESETS[name].train_batch(_cuda_cfg(name), "fit")[0]  # the preset's own batch
    assert name in markdown_table(results)


def _cuda_cfg(name):
    from diffedit_lab.utils.config import compose_config

    return compose_config([*PRESETS[name].command(None, "cuda"), "paths.output_dir=/tmp/diffedit_smoke"])


@pytest.mark.parametrize("family,stage", [("sdd", "fit"), ("sdft", "fit"), ("rectifier", "edit"), ("asyrp", "fit")])
def test_estimate_runs_on_each_family_after_its_training_stage(family, stage, compose):
    """The estimate drives each method's own ``training_step`` after the stage trained it (tiny models here)."""
    from diffedit_lab.run import run
    from experiments.smoke.presets import batch_maker

    undo = est.record_component_nodes()
    try:
        stages = "[fit,edit]" if stage == "edit" else "[fit]"
        cfg = compose(f"method={family}/tiny", "trainer.max_steps=2", f"stage={stages}")
        method = run(cfg).objects["method"]
    finally:
        undo()
    batch = int(cfg.method.fit.batch_size) if family == "asyrp" else int(cfg.data.batch_size)
    out = est.estimate(method, batch_maker(family, method, cfg, stage), batch, 1, "bf16-mixed")
    assert out["trainable_params"] > 0 and out["frozen_params"] > 0 and out["activations_gib"] > 0
    assert out["optimizer"] in {"Adam", "AdamW", "SGD"} and out["verdict"] == "fits"
    assert method._trainer is not None  # the stage's Trainer is given back
