"""W&B dashboards, read back from the offline run files (wandb's own protobuf records, ``tests/wandb_records.py``):
config, group/name/job type, per-stage keys and axes, best-value summaries, captioned images, per-image tables,
model artifacts, results files, no NaN values, everything inside the run folder — on the tiny demos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from diffedit_lab.run import run
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.run_naming import short_names, swept_keys
from diffedit_lab.utils.wandb_dashboard import best_summary, curve_key, result_key
from tests.wandb_records import OfflineRun, offline_runs, read_run


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B offline with every folder of its own under ``tmp_path`` (CI exports WANDB_MODE=disabled)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DIR", "wb"), ("WANDB_CACHE_DIR", "wb_cache"), ("WANDB_CONFIG_DIR", "wb_config"),
                     ("WANDB_DATA_DIR", "wb_data"), ("WANDB_ARTIFACT_DIR", "wb_artifacts")):  # fmt: skip
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def demo(compose, experiment: str, *overrides: str, out: Path) -> OfflineRun:
    quiet = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    cfg = compose(f"experiment={experiment}", "logger=wandb", *quiet, *overrides, tiny=False, out_dir=out)
    run(cfg)
    folders = offline_runs(out)
    assert len(folders) == 1, folders
    return read_run(folders[0])


def numbers_only(r: OfflineRun) -> None:
    """Point 7: no NaN/inf value was logged."""
    for row in r.history:
        for k, v in row.items():
            assert not (isinstance(v, float) and not math.isfinite(v)), (k, v)


def self_contained(r: OfflineRun, run_dir: Path) -> None:
    """Point 7: every file an artifact (model or table) stages lies inside the offline run folder."""
    for a in r.artifacts:
        for entry in a.manifest.contents:
            if entry.local_path:
                assert Path(entry.local_path).is_relative_to(r.folder), (a.name, entry.local_path)
                assert Path(entry.local_path).is_file()


def table_rows(r: OfflineRun, key: str) -> tuple[list[str], list[list]]:
    path = next(row[f"{key}/path"] for row in r.history if f"{key}/path" in row)
    data = json.loads((r.folder / "files" / path).read_text())
    return data["columns"], data["data"]


# --- pure rules ---------------------------------------------------------------------------------------------------
def test_keys_summaries_and_names():
    assert curve_key("fit", "train/loss") == "fit/train/loss" and curve_key("fit", "val/fid") == "fit/val/fid"
    assert curve_key("train_classifier", "classifier/acc") == "train_classifier/train/acc"
    assert curve_key("train_classifier", "lr-AdamW") == "train_classifier/train/lr-AdamW"
    assert curve_key("edit", "edit/l1") == "edit/train/l1"  # Rectifier's editor loss, not the edit's output
    assert result_key("apply", "edit/l1") == "apply/edit/l1" and result_key("edit", "edit/l1") == "edit/l1"
    assert result_key("fit", "time/fit_s") == "time/fit_s"
    assert [best_summary(k) for k in ("val/fid", "eval/kid", "fit/train/loss", "eval/clip_dir", "eval/psnr")] == [
        "min", "min", "min", "max", "max"]  # fmt: skip
    assert best_summary("fit/train/lr-AdamW") is None and best_summary("fit/train/epoch") is None
    assert swept_keys(["experiment=demo", "method.optim.lr=5e-3,1e-3", "-m"]) == {"method.optim.lr"}
    assert short_names(["experiment=demo", "method.optim.lr=0.001"], {"method.optim.lr"}) == "lr=0.001"


def test_grid_is_as_wide_as_its_pairs():
    import torch

    from diffedit_lab.callbacks.predictions import before_after_grid

    x = torch.zeros(4, 3, 8, 8)
    assert before_after_grid(x, x, columns=8).shape[-1] == 4 * 8 + 5 * 2  # 4 columns, not 8 with 4 black
    grid = before_after_grid(torch.zeros(5, 3, 8, 8), torch.zeros(5, 3, 8, 8), columns=4)
    assert grid.min() >= 0, "a short last row is padded white like the gaps, not black"


def test_log_model_bad_value_stops_before_anything_is_written(compose, tmp_path):
    cfg = compose("experiment=demo", "logger=wandb", "logger.wandb.log_model=yes", tiny=False)
    with pytest.raises(UserError, match="log_model"):
        run(cfg)
    assert not (tmp_path / "run").exists()


# --- the demos ------------------------------------------------------------------------------------------------------
def test_sdd_demo_dashboard(compose, offline):
    out = offline / "run"
    r = demo(compose, "demo", "method.fit.steps=6", "logger.wandb.log_model=true", out=out)
    # 1. the composed config, nested, with parameter counts, random_weights and the git commit
    assert r.config["method"]["optim"]["lr"] == 0.005 and r.config["task_name"] == "demo"
    assert r.config["params"]["total"] > 0 and r.config["random_weights"] is False and "git_commit" in r.config
    # 2. a plain run: its task as group, a readable name, the stages as job type
    assert r.run.run_group == "demo" and r.run.display_name == f"demo-{out.name}"
    assert r.run.job_type == "select+fit+edit+eval"
    # 3. per-stage keys and step axes; one monotone run axis; inference at the steps the mapper trained
    keys = r.keys()
    assert {"fit/train/loss", "fit/train/lr-AdamW", "fit/step", "edit/latency_ms_per_image", "eval/fid"} <= keys
    assert not any(k.startswith(("train/", "lr-", "epoch")) for k in keys)
    assert r.metrics["fit/train/loss"].step_metric == "fit/step" and r.metrics["eval/fid"].step_metric == "eval/step"
    axis = r.series("trainer/global_step")
    assert axis == sorted(axis) and r.series("eval/step")[-1] == max(r.series("fit/step")) > 0
    # 4. best-value summaries
    assert r.metrics["eval/fid"].summary.min and r.metrics["eval/clip_dir"].summary.max
    assert set(r.summary["eval/fid"]) == {"min"} and set(r.summary["fit/train/loss"]) == {"min"}
    # 5. captioned grids sized to their content, per-image tables, the selection's scores as table and plot
    caption = r.summary["edit/before_after/captions"][0]
    assert "angry" in caption and "00000" in caption and caption.startswith("edit")
    columns, rows = table_rows(r, "edit/per_image")
    assert {"image", "source", "edited", "l1", "psnr", "latency_ms_per_image"} <= set(columns) and len(rows) == 8
    assert len({row[columns.index("l1")] for row in rows}) > 1, "each image its own score"
    columns, rows = table_rows(r, "select/scores_table")
    assert columns == ["t", "entropy", "l1", "hqs", "selected"] and any(row[-1] for row in rows)
    assert "select/scores_table_plot_table/path" in keys
    width, height = r.summary["edit/photos/before_after/width"], r.summary["edit/photos/before_after/height"]
    assert width < 2 * height * 4, "4 photo pairs: 4 columns, no black padding to 8"
    # 6. the mapper (and, log_model=true, its checkpoint) as model artifacts; results files as run files
    models = {a.name: a for a in r.artifacts if a.type == "model"}
    assert {"demo-fit-mapper", "demo-fit-checkpoint"} <= set(models)
    assert json.loads(models["demo-fit-mapper"].metadata)["prompt"]
    assert {"results/config_resolved.yaml", "results/metrics.json", "results/selection/scores.csv"} <= set(r.files)
    # 7.
    numbers_only(r)
    self_contained(r, out)


@pytest.mark.slow
def test_sdft_demo_dashboard(compose, offline):
    r = demo(compose, "sdft_demo", out=offline / "run")
    keys = r.keys()
    # SDFT's two training stages no longer share a chart; the nested Asyrp runs show their curves under their prompt
    assert {"fit/train/lr-AdamW", "train_classifier/train/lr-AdamW", "train_classifier/train/acc"} <= keys
    assert any(k.startswith("edit/smiling/fit/train/") for k in keys) and "edit/smiling/eval/clip_dir" in keys
    assert any(k.startswith("edit/old/edit/before_after") for k in keys)
    assert r.series("train_classifier/step")[0] < r.series("train_classifier/step")[-1]
    axis = r.series("trainer/global_step")
    assert axis == sorted(axis)
    names = {a.name for a in r.artifacts if a.type == "model"}
    assert {"sdft_demo-fit-sdft", "sdft_demo-train_classifier-domain_classifier"} <= names
    assert {"sdft_demo-edit-smiling-fit-asyrp", "sdft_demo-edit-old-fit-asyrp"} <= names
    numbers_only(r)
    self_contained(r, offline / "run")


@pytest.mark.slow
def test_rectifier_demo_dashboard(compose, offline):
    r = demo(compose, "rectifier_demo", out=offline / "run")
    keys = r.keys()
    assert {"edit/train/l1", "edit/train/loss", "edit/clip_dir"} <= keys and "edit/loss" not in keys, (
        "the editor's loss curve (and its final value) apart from what the edit pass scores"
    )
    assert r.metrics["edit/train/l1"].step_metric == "edit/step"
    assert "reconstruct/grid/captions" in keys and "edit/per_image/path" in keys
    names = {a.name for a in r.artifacts if a.type == "model"}
    assert {"rectifier_demo-fit-rectifier", "rectifier_demo-edit-editor"} <= names
    numbers_only(r)
    self_contained(r, offline / "run")


@pytest.mark.slow
def test_compare_demo_dashboard(compose, offline):
    r = demo(compose, "compare_demo", "method.num_images=2", "~method.entries.sdedit_50", "~method.entries.sdedit_70",
             out=offline / "run")  # fmt: skip
    columns, rows = table_rows(r, "compare/per_image")
    assert {"image", "entry", "source", "edited", "l1", "psnr"} <= set(columns)
    assert "fid" not in columns, "per-image rows carry the image's own scores, not the entry's averages"
    columns, rows = table_rows(r, "compare/methods")
    assert len(rows) == 4 and "fid" in columns
    assert not any(isinstance(v, float) and not math.isfinite(v) for row in rows for v in row)
    numbers_only(r)
    self_contained(r, offline / "run")


def test_two_job_sweep_is_one_group_named_by_overrides(offline, cache_dir, monkeypatch):
    """Point 2: ``-m … method.optim.lr=5e-3,1e-3``: both jobs in one group of their own (not the task's), each named
    after the value it sweeps; a failed start-up check would stop in one line (covered above)."""
    from tests.helpers import cli_in_process

    sweep = offline / "sweep"
    monkeypatch.chdir(offline)
    code, err = cli_in_process("-m", "experiment=demo", "logger=wandb", "stage=fit", "method.fit.steps=2",
                               "callbacks=none", "method.optim.lr=5e-3,1e-3", f"hydra.sweep.dir={sweep}",
                               f"paths.cache_dir={cache_dir}", "trainer.enable_progress_bar=false",
                               "trainer.enable_model_summary=false")  # fmt: skip
    assert code == 0, err[-2000:]
    runs = [read_run(offline_runs(sweep / job)[0]) for job in ("0", "1")]
    groups = {r.run.run_group for r in runs}
    assert len(groups) == 1 and groups != {"demo"} and sweep.name in groups.pop()
    assert [r.run.display_name for r in runs] == ["lr=0.005", "lr=0.001"]
    assert all(r.run.job_type == "fit" for r in runs)
    assert [r.config["method"]["optim"]["lr"] for r in runs] == [0.005, 0.001]
