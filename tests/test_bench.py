"""Smoke test of the speed benchmark (`make bench`): it runs end to end and writes a complete JSON file.

Timings are never asserted (DESIGN §5): only that every measurement is there, positive, and that the bare
PyTorch SDD step computes the same loss as the framework's training step.
"""

from __future__ import annotations

import json
import math

import pytest

bench = pytest.importorskip("experiments.bench.run")

EXPECTED = {
    "sd.predict_eps_cfg",
    "sd.vae_encode",
    "sd.sds_step",
    "uncond.predict_eps",
    "edit.sdd",
    "edit.sdedit",
    "train.sdd_step.framework",
    "train.sdd_step.bare",
    "train.sdd_step.trainer",
    "train.sdft_step",
    "train.naive_step",
    "rectifier.plain_forward",
    "rectifier.forward.grouped",
    "rectifier.forward.vmap",
    "rectifier.step.grouped",
}


def test_bench_tiny_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "bench" / "results.json"
    bench.main(["--sizes", "tiny", "--repeats", "1", "--quick", "--out", str(out)])

    data = json.loads(out.read_text())
    assert {"env", "settings", "measurements", "ratios", "train_check"} <= set(data)
    env = data["env"]
    assert env["torch"] and env["cpu_count"] >= 1 and env["torch_num_threads"] >= 1
    assert "cuda_available" in env

    entries = data["measurements"]
    assert {e["name"] for e in entries} == EXPECTED
    for e in entries:
        assert {"name", "size", "device", "median_ms", "min_ms", "max_ms", "repeats"} <= set(e), e["name"]
        assert e["size"] == "tiny" and e["device"].startswith("cpu")
        assert e["repeats"] == 1
        assert math.isfinite(e["median_ms"]) and e["median_ms"] > 0, e["name"]

    ratio_names = ("sdedit_over_sdd_edit", "sdd_framework_over_bare_step", "sdd_trainer_over_bare_step")
    for name in (*ratio_names, "sdft_over_naive_step", "rectifier_grouped_over_plain", "rectifier_step_over_plain"):
        value = data["ratios"][name]["tiny"]
        assert math.isfinite(value) and value > 0, name

    check = data["train_check"]
    assert check["loss_framework"] == pytest.approx(check["loss_bare"], rel=1e-5)
    assert "edit.sdedit" in capsys.readouterr().out  # the printed table
    sdft = data["sdft"]["tiny"]  # the student starts as the teacher: the distillation terms are 0 at the first step
    assert sdft["loss_sdft"] == pytest.approx(sdft["loss_naive"], rel=1e-6)


def test_real_without_cuda_measures_only_the_edit_latency(monkeypatch, tmp_path):
    """No GPU: ``--sizes real`` runs the per-image latency suite on the CPU (stubbed here: minutes at real size)."""
    from experiments.bench import latency

    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    seen = {}

    def fake_measure(b, device):
        seen["device"] = device.type
        return {"device": "cpu", "dtype": "fp32", "threads": 1, "latency_ms_per_image": {"sdd": 1.0, "ddib": 90.0},
                "over_sdd": {"sdd": 1.0, "ddib": 90.0}, "efficiency": {"generator_gflop_per_s": 1.0,
                "sd_unet_gflop_per_s": 1.0, "generator_over_unet": 1.0}}  # fmt: skip

    monkeypatch.setattr(latency, "measure", fake_measure)
    data = bench.main(["--sizes", "real", "--out", str(tmp_path / "r.json")])
    assert seen["device"] == "cpu" and data["latency"]["over_sdd"]["ddib"] == 90.0
    assert data["measurements"] == [] and data["skipped"] == ["real fp16 suites: no CUDA device visible"]
    assert json.loads((tmp_path / "r.json").read_text())["latency"]["latency_ms_per_image"]["sdd"] == 1.0
