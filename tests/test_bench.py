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
    "train.sdft_step.joint",
    "train.sdft_step.separate",
    "train.naive_step",
    "rectifier.plain_forward",
    "rectifier.forward.grouped",
    "rectifier.forward.vmap",
    "rectifier.step.grouped",
    # every method's pipeline, for free (experiments/bench/pipelines.py: each conf/method/<m>/tiny.yaml)
    *(f"edit.pipeline.{m}" for m in ("asyrp", "ddib", "rectifier", "sdd", "sdedit", "sdft")),
}


def test_bench_tiny_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "bench" / "results.json"
    bench.main(["--sizes", "tiny", "--repeats", "1", "--quick", "--out", str(out)])

    data = json.loads(out.read_text())
    assert {"env", "settings", "measurements", "ratios", "ratios_min", "train_check", "flops"} <= set(data)
    env = data["env"]
    assert env["torch"] and env["cpu_count"] >= 1 and env["torch_num_threads"] >= 1
    assert "cuda_available" in env

    entries = data["measurements"]
    assert data["pipelines"]["skipped"] == {}
    assert {e["name"] for e in entries} == EXPECTED
    for e in entries:
        assert {"name", "size", "device", "median_ms", "min_ms", "max_ms", "repeats"} <= set(e), e["name"]
        assert e["size"] == "tiny" and e["device"].startswith("cpu")
        assert e["repeats"] == 1
        assert math.isfinite(e["median_ms"]) and e["median_ms"] > 0, e["name"]

    ratio_names = ("sdedit_over_sdd_edit", "sdd_framework_over_bare_step", "sdd_trainer_over_bare_step")
    sdft_ratios = ("sdft_over_naive_step", "sdft_joint_over_naive_step", "sdft_separate_over_naive_step")
    for name in (*ratio_names, *sdft_ratios, "rectifier_grouped_over_plain", "rectifier_step_over_plain"):
        for block in ("ratios", "ratios_min"):
            value = data[block][name]["tiny"]
            assert math.isfinite(value) and value > 0, name
    # the default `student_batching` is joint
    assert data["ratios"]["sdft_over_naive_step"] == data["ratios"]["sdft_joint_over_naive_step"]
    flops = data["flops"]["tiny"]
    assert flops["matmul"]["gflop_per_s"] > 0
    assert set(flops["paths"]) == {"sd_unet", "stylegan2_1024", "adm_256", "ddpm_celebahq_256", "rectified_unet"}
    for name, p in flops["paths"].items():
        assert p["gflop"] > 0 and p["median_s"] > 0 and p["of_matmul_peak"] > 0, name

    check = data["train_check"]
    assert check["loss_framework"] == pytest.approx(check["loss_bare"], rel=1e-5)
    assert "edit.sdedit" in capsys.readouterr().out  # the printed table
    sdft = data["sdft"]["tiny"]  # the student starts as the teacher: the distillation terms are 0 at the first step
    assert sdft["loss_sdft"] == pytest.approx(sdft["loss_naive"], rel=1e-6)
    assert sdft["loss_sdft_joint"] == pytest.approx(sdft["loss_sdft_separate"], rel=1e-6)
    assert sdft["default_mode"] == "joint" and set(sdft["ratios_to_naive"]) == {"joint", "separate"}


def test_real_without_cuda_runs_the_cpu_real_suites(monkeypatch, tmp_path):
    """No GPU: ``--sizes real`` runs the per-image latency suite and the real-size CPU suites (FLOP throughput,
    Rectifier, SDFT in both modes at batch 1 and 2, the SDD step) — each stubbed here (minutes at real size), the
    wiring and the ratio keys checked."""
    from experiments.bench import latency

    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "retain_cpu_memory", lambda: "retain (stub)")
    seen: dict = {"sdft": [], "device": None}

    def fake_measure(b, device):
        seen["device"] = device.type
        return {"device": "cpu", "dtype": "fp32", "threads": 1, "latency_ms_per_image": {"sdd": 1.0, "ddib": 90.0},
                "over_sdd": {"sdd": 1.0, "ddib": 90.0}, "efficiency": {"generator_gflop_per_s": 1.0,
                "sd_unet_gflop_per_s": 1.0, "generator_over_unet": 1.0}}  # fmt: skip

    def entry(name, ms, batch):
        return {"name": name, "size": "real", "device": "cpu (stub)", "batch": batch, "median_ms": ms, "min_ms": ms,
                "max_ms": ms, "repeats": 1, "warmup": 0}  # fmt: skip

    def fake_sdft(b, size, device, batch=None, checkpointing=False, parts=False, repeats=None, warmup=None):
        seen["sdft"].append((size, device.type, batch, parts))
        for name, ms in (
            ("train.sdft_step.joint", 30.0),
            ("train.sdft_step.separate", 27.0),
            ("train.naive_step", 10.0),
        ):
            b.add(entry(name, ms * batch, batch))
        return {"batch": batch}

    def fake_rectifier(b, size, device, batch=None, strategies=(), repeats=None, warmup=None):
        seen["rectifier"] = (batch, strategies)
        b.add(entry("rectifier.plain_forward", 2.0, batch))
        b.add(entry("rectifier.forward.grouped", 2.5, batch))
        return {}

    def fake_train(b, device, work_dir, size="tiny", batch_size=2, repeats=None, warmup=None):
        seen["train"] = (size, batch_size)
        b.add(entry("train.sdd_step.framework", 101.0, batch_size))
        b.add(entry("train.sdd_step.bare", 100.0, batch_size))
        return {"loss_framework": 1.0, "loss_bare": 1.0}

    monkeypatch.setattr(latency, "measure", fake_measure)
    monkeypatch.setattr(bench, "measure_flops", lambda size, device, repeats=3: {"size": size, "device": device.type})
    monkeypatch.setattr(bench, "bench_sdft", fake_sdft)
    monkeypatch.setattr(bench, "bench_rectifier", fake_rectifier)
    monkeypatch.setattr(bench, "bench_train", fake_train)
    data = bench.main(["--sizes", "real", "--out", str(tmp_path / "r.json")])
    assert seen["device"] == "cpu" and data["latency"]["over_sdd"]["ddib"] == 90.0
    assert data["skipped"] == ["real fp16 suites: no CUDA device visible"]
    assert data["settings"]["cpu_real"]["cpu_malloc"] == "retain (stub)"
    assert seen["sdft"] == [("real", "cpu", 1, True), ("real", "cpu", 2, False)]
    assert seen["rectifier"] == (2, ("grouped",)) and seen["train"] == ("real", 1)
    assert data["flops"]["real"] == {"size": "real", "device": "cpu"}
    r = data["ratios"]
    assert r["sdft_joint_over_naive_step"] == {"real": 3.0, "real/b2": 3.0}
    assert r["sdft_separate_over_naive_step"] == {"real": 2.7, "real/b2": 2.7}
    assert r["sdft_over_naive_step"] == r["sdft_joint_over_naive_step"]  # the default mode
    assert r["rectifier_grouped_over_plain"] == {"real": 1.25} and r["sdd_framework_over_bare_step"] == {"real": 1.01}
    assert set(data["sdft"]) == {"real", "real/b2"}
    assert json.loads((tmp_path / "r.json").read_text())["latency"]["latency_ms_per_image"]["sdd"] == 1.0


def test_real_cpu_suites_can_be_picked(monkeypatch, tmp_path):
    """``--suites sdd`` runs only the real-size SDD step (stubbed), nothing else."""
    from experiments.bench import latency

    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "retain_cpu_memory", lambda: None)
    called = []
    for name in ("measure_flops", "bench_sdft", "bench_rectifier"):
        monkeypatch.setattr(bench, name, lambda *a, _n=name, **k: called.append(_n))
    monkeypatch.setattr(latency, "measure", lambda *a, **k: called.append("latency"))
    monkeypatch.setattr(bench, "bench_train", lambda *a, **k: called.append("sdd") or {"loss_bare": 1.0})
    data = bench.main(["--sizes", "real", "--suites", "sdd", "--out", str(tmp_path / "r.json")])
    assert called == ["sdd"] and data["train_check_real"] == {"loss_bare": 1.0}
    assert "latency" not in data and "flops" not in data and data["settings"]["cpu_real"]["cpu_malloc"] == "default"
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "real", "--suites", "sdd,nope", "--out", str(tmp_path / "r2.json")])
