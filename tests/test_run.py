"""The run entry point: fast_dev_run, resume, DDP on two CPU processes, CLI end to end, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from diffedit_lab.run import build_method, run
from diffedit_lab.utils.artifacts import load_artifact
from diffedit_lab.utils.errors import UserError
from tests.helpers import run_cli, tiny_overrides


def test_fast_dev_run_all_stages(compose, tmp_path):
    cfg = compose("debug=fdr", "logger=none")
    run(cfg)
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"select/num_selected", "edit/latency_ms_per_image", "eval/clip_dir", "eval/fid"} <= set(metrics)
    assert (out / "selection" / "scores.csv").is_file() and (out / "edit" / "grid.png").is_file()


@pytest.mark.slow
def test_resume_continues_step_count(compose, tmp_path):
    out = tmp_path / "run"
    run(compose("stage=fit", "method.fit.steps=4", out_dir=out))
    last = out / "checkpoints" / "fit" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    first_mapper = load_artifact(out / "mapper.safetensors", "mapper").state

    # resume the same run dir with a longer budget: continues from step 4, not from 0
    run(compose("stage=fit", "method.fit.steps=6", "ckpt_path=last", out_dir=out))
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 6
    assert (out / "checkpoints" / "fit" / "step_000006.ckpt").is_file()
    assert ckpt["sdd_selection"]["timesteps"], "the timestep selection travels with the checkpoint"
    resumed_mapper = load_artifact(out / "mapper.safetensors", "mapper").state
    assert any(not torch.equal(first_mapper[k], resumed_mapper[k]) for k in first_mapper)


def test_ddp_two_cpu_processes(compose, tmp_path):
    cfg = compose("trainer=ddp_sim", "stage=[select,fit]", "method.fit.steps=2", "callbacks=none")
    result = run(cfg)
    trainer = result.objects["context"].trainer
    assert trainer.world_size == 2  # two processes trained; rank 0 handed its weights back to this process
    saved = load_artifact(tmp_path / "run" / "mapper.safetensors", "mapper").state
    untrained = build_method(cfg.method).mapper.state_dict()
    assert any(not torch.equal(saved[k], untrained[k]) for k in saved), "the DDP steps updated the mapper"


def test_unknown_stage_is_a_user_error(compose):
    with pytest.raises(UserError, match="no stage 'sample'"):
        run(compose("stage=sample"))


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(compose, tmp_path, monkeypatch):
    from diffedit_lab.models.mapper import LevelsMapper

    original, calls = LevelsMapper.edit, {"train": 0}

    def edit_turning_nan(self, w):
        out = original(self, w)
        if torch.is_grad_enabled():  # training steps only (previews run under no_grad)
            calls["train"] += 1
            if calls["train"] > 2:
                return out * float("nan")
        return out

    monkeypatch.setattr(LevelsMapper, "edit", edit_turning_nan)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="non-finite loss at step 2"):
        run(compose("stage=fit", "method.fit.steps=4", out_dir=out))
    ckpt = torch.load(out / "checkpoints" / "fit" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


@pytest.mark.slow
def test_cli_select_fit_edit_eval(tmp_path, cache_dir):
    out = tmp_path / "cli"
    args = [a for a in tiny_overrides(out, cache_dir) if not a.startswith("paths.output_dir")]
    res = run_cli(*[*args, f"hydra.run.dir={out}", "logger=csv"])
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["select/num_selected"] >= 1 and metrics["eval/num_images"] == 4
    for rel in [
        "config_resolved.yaml",
        "mapper.safetensors",
        "checkpoints/fit/last.ckpt",
        "selection/scores.png",
        "selection/selected.json",
        "edit/grid.png",
        "edit/photos/astronaut_edited.png",
        "csv/metrics.csv",
    ]:
        assert (out / rel).is_file(), rel
    assert list((out / "images" / "fit").glob("before_after_step*.png"))


def test_cli_missing_codes_file_is_one_line(tmp_path, cache_dir):
    missing = tmp_path / "nope" / "codes.pt"
    res = run_cli(
        *[
            "method=sdd/tiny",
            f"data.codes={missing}",
            f"hydra.run.dir={tmp_path / 'r'}",
            f"paths.cache_dir={cache_dir}",
            "logger=none",
            "stage=select",
        ]
    )
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(missing) in last


def test_cli_missing_weights_is_one_line(tmp_path):
    res = run_cli(
        *[
            "generator.checkpoint=/no/such/stylegan2.pt",
            "prior=tiny_sd",
            "stage=select",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'r'}",
        ]
    )
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "/no/such/stylegan2.pt" in last


@pytest.mark.parametrize(
    "override",
    [
        "method.selection.rule=fixed_1000",
        "method.selection.timesteps=[100,1000]",
        "method.selection.random_range=[20,1200]",
    ],
)
def test_timesteps_outside_the_teacher_schedule_are_user_errors(compose, override):
    with pytest.raises(UserError, match="1000|1200"):
        run(
            compose(
                "stage=select",
                override,
                "method.selection.rule=random" if "random_range" in override else "method.selection.cache=false",
            )
        )


def test_fixed_rule_skips_the_scan_unless_asked(compose, tmp_path):
    out = tmp_path / "run"
    run(compose("stage=select", "method.selection.rule=fixed_300", out_dir=out))
    assert json.loads((out / "selection" / "selected.json").read_text())["timesteps"] == [300]
    assert not (out / "selection" / "scores.csv").exists()
    run(compose("stage=select", "method.selection.rule=fixed_300", "method.selection.always_scan=true", out_dir=out))
    assert (out / "selection" / "scores.csv").is_file()


def test_edit_alone_loads_the_trained_mapper(compose, tmp_path):
    trained = tmp_path / "trained"
    run(compose("stage=[select,fit]", "method.fit.steps=2", out_dir=trained))
    saved = load_artifact(trained / "mapper.safetensors", "mapper").state

    # a new run dir with no mapper: a clear error instead of editing with a random mapper
    with pytest.raises(UserError, match="no trained SDD mapper"):
        run(compose("stage=edit", out_dir=tmp_path / "fresh"))

    from diffedit_lab.methods.sdd.module import SDDModule

    untrained = build_method(compose().method).mapper.state_dict()
    assert any(not torch.equal(saved[k], untrained[k]) for k in saved), "2 steps moved the mapper off its init"
    last = trained / "checkpoints" / "fit" / "last.ckpt"
    for source in (f"method.weights={trained / 'mapper.safetensors'}", f"ckpt_path={last}"):
        out = tmp_path / source.split("=")[0]
        result = run(compose("stage=[edit,eval]", source, out_dir=out))
        module = result.objects["method"]
        assert isinstance(module, SDDModule)
        assert (out / "edit" / "grid.png").is_file()
        # the mapper the run edited with is the trained one, not a fresh init
        for k, v in module.mapper.state_dict().items():
            torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    # both sources give the same edits (the same trained mapper)
    a, b = (tmp_path / name / "edit" / "edited" / "00000.png" for name in ("method.weights", "ckpt_path"))
    assert a.read_bytes() == b.read_bytes()
    # a run dir of an older version (its export a torch.save dict, mapper.pt) still loads, to the same edits
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    art = load_artifact(trained / "mapper.safetensors", "mapper")
    assert art.kind == "artifact" and art.config["prompt"] == "angry face" and art.config["selection"]["timesteps"]
    torch.save({"mapper": art.state, **art.config}, legacy / "mapper.pt")
    run(compose("stage=edit", out_dir=legacy))
    assert (legacy / "edit" / "edited" / "00000.png").read_bytes() == a.read_bytes()
    # the Lightning checkpoint itself loads with weights_only=True (no pickled config objects)
    torch.load(trained / "checkpoints" / "fit" / "last.ckpt", weights_only=True)


def test_ckpt_path_last_without_checkpoint_is_a_user_error(compose, tmp_path):
    with pytest.raises(UserError, match="no checkpoint at .*last.ckpt"):
        run(compose("stage=fit", "ckpt_path=last", out_dir=tmp_path / "new"))
    with pytest.raises(UserError, match="no checkpoint at '/no/such.ckpt'"):
        run(compose("stage=fit", "ckpt_path=/no/such.ckpt", out_dir=tmp_path / "new"))


@pytest.mark.slow
def test_later_stages_on_the_same_run_dir_keep_earlier_metrics_and_prompt_must_match(compose, tmp_path):
    out = tmp_path / "run"
    run(compose("stage=[select,fit]", "method.fit.steps=2", out_dir=out))
    run(compose("stage=edit", out_dir=out))  # picks up <run>/mapper.safetensors
    metrics = json.loads((out / "metrics.json").read_text())
    assert "select/num_selected" in metrics and "edit/num_images" in metrics and "train/loss" in metrics
    assert len(list(out.glob("config_resolved*.yaml"))) == 2
    with pytest.raises(UserError, match="trained for the prompt 'angry face'"):
        run(compose("stage=edit", "prompt.text=smiling face", out_dir=out))


def test_a_finished_run_releases_its_networks(compose, tmp_path):
    """A comparison runs its entries one after another in one process: once ``run`` returns and its result is
    dropped, the method and every frozen network it built (teacher, CLIP, identity) are freed."""
    import gc
    import weakref

    result = run(compose("method=sdedit/tiny", "logger=none", out_dir=tmp_path / "sdedit"))
    method = result.objects["method"]
    built = [weakref.ref(m) for m in method._frozen.values() if isinstance(m, torch.nn.Module)]
    assert len(built) >= 2  # at least the teacher and CLIP were built for edit + eval
    refs = [weakref.ref(method), *built]
    del result, method
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
