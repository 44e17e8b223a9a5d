"""``experiment=compare_demo``: every method on the same images, one row each with every metric, figure, report."""

from __future__ import annotations

import csv
import json

import pytest

from diffedit_lab.run import run
from diffedit_lab.utils.errors import UserError

# the demo's Rectifier entry with 2 steps per stage (the test's size)
RECTIFIER = ("method.entries.rectifier.overrides=['~data.num_images','method.fit.steps=2','method.edit.steps=2',"
             "'method.edit.sample.steps=2','method.eval.folder.metrics=[clip_dir,identity,fid,kid]']")  # fmt: skip


@pytest.fixture
def compose_compare(tmp_path, cache_dir):
    from diffedit_lab.utils.config import compose_config
    from tests.helpers import CONF

    def _compose(*overrides: str, out=None):
        base = ["experiment=compare_demo", "logger=none", f"paths.output_dir={out or tmp_path / 'run'}",
                f"paths.cache_dir={cache_dir}", "method.num_images=2", "~method.entries.sdedit_50",
                "~method.entries.sdedit_70", RECTIFIER]  # fmt: skip
        return compose_config([*base, *overrides], config_dir=CONF)

    return _compose


def _metrics(run_dir) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def test_entries_declare_how_their_method_is_driven(compose_compare, tmp_path):
    """Image caps, stages, weights and resolution come from each entry's declaration (SDD: the defaults)."""
    from diffedit_lab.compare import Comparison
    from diffedit_lab.compare.config import CompareConfig
    from diffedit_lab.utils.schema import validate

    def overrides(*cfg_overrides: str) -> dict[str, list[str]]:
        cfg = validate(CompareConfig, compose_compare(*cfg_overrides).method, "method")
        return {
            "sdd": Comparison.entry_overrides(cfg, "sdd", tmp_path, None),
            "rectifier": Comparison.entry_overrides(cfg, "rectifier", tmp_path, tmp_path),
        }

    trained = overrides("method.entries.sdd.weights=/w/m.pt", "method.entries.rectifier.weights=/w/r.pt",
                        "method.entries.rectifier.resolution=24")  # fmt: skip
    sdd, rect = trained["sdd"], trained["rectifier"]
    assert {"method.edit.max_images=2", "method.eval.max_images=2", "method.weights=/w/m.pt"} <= set(sdd)
    assert "stage=[edit,eval]" in sdd
    assert {"method.edit.sample.max_images=2", "method.weights=/w/r.pt", "stage=[edit,eval]"} <= set(rect)
    assert {"data=folder", f"data.root={tmp_path}", "data.resolution=24", "data.max_images=2"} <= set(rect)
    assert not [o for o in rect if o.startswith(("method.edit.max_images", "method.eval.max_images"))]

    fresh = overrides("method.entries.rectifier.resolution=24")
    assert "stage=[fit,edit,eval]" in fresh["rectifier"]  # trains its rectifier, skips reconstruct
    assert not [o for o in fresh["sdd"] if o.startswith(("stage=", "method.weights"))]  # SDD: its default stages
    assert not [o for o in fresh["rectifier"] if o.startswith("method.weights")]


@pytest.mark.slow
def test_compare_writes_one_row_per_method_on_the_same_images(compose_compare, tmp_path):
    out = tmp_path / "run"
    result = run(compose_compare("method.entries.sdd.overrides=['method.fit.steps=2']", out=out))
    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["entry"] for r in rows] == ["sdd", "sdedit_30", "ddib", "rectifier"]  # the source entry first
    assert len({r["inputs_sha256"] for r in rows}) == 1, "every method edited the same pixels"
    for r in rows:
        for col in ("clip_dir", "identity", "fid", "kid", "latency_ms_per_image", "train_s"):
            assert r[col] not in ("", "nan"), (r["entry"], col)
        assert float(r["num_images"]) == 2
    assert float(rows[0]["train_s"]) > 0 and float(rows[1]["train_s"]) == 0  # SDD trained here, SDEdit has nothing
    rect_run = out / "methods" / "rectifier"
    rect = _metrics(rect_run)
    assert float(rows[3]["train_s"]) == pytest.approx(rect["time/fit_s"] + rect["time/edit_s"], rel=1e-6)
    assert "time/reconstruct_s" not in rect and (rect_run / "rectifier.safetensors").is_file()
    assert float(rows[3]["latency_ms_per_image"]) == pytest.approx(rect["edit/latency_ms_per_image"])
    for f in ("comparison.md", "comparison.png", "report.md"):
        assert (out / f).is_file(), f
    assert "comparison.png" in (out / "report.md").read_text()
    assert result.metrics["compare/sdd/clip_dir"] == pytest.approx(float(rows[0]["clip_dir"]), rel=1e-4)

    # trained weights given by path are reused: no training, same mapper → the same SDD numbers; the Rectifier
    # skips fit and trains only its editor (edit), from the given rectifier → the same edits as above
    weights = out / "methods" / "sdd" / "mapper.safetensors"
    reuse = [
        f"method.entries.sdd.weights={weights}",
        f"method.entries.rectifier.weights={rect_run / 'rectifier.safetensors'}",
    ]
    only = ["~method.entries.sdedit_30", "~method.entries.ddib"]
    again = run(compose_compare(*reuse, *only, out=tmp_path / "again"))
    assert again.metrics["compare/sdd/train_s"] == 0
    assert again.metrics["compare/sdd/clip_dir"] == pytest.approx(float(rows[0]["clip_dir"]), abs=1e-5)
    rect_again = _metrics(tmp_path / "again" / "methods" / "rectifier")
    assert (
        "time/fit_s" not in rect_again
        and not (tmp_path / "again" / "methods" / "rectifier" / "rectifier.safetensors").exists()
    )
    assert rect_again["time/edit_s"] > 0  # the editor is trained even with given weights: a training cost
    assert again.metrics["compare/rectifier/train_s"] == pytest.approx(rect_again["time/edit_s"])
    assert again.metrics["compare/rectifier/clip_dir"] == pytest.approx(float(rows[3]["clip_dir"]), abs=1e-5)
    with open(tmp_path / "again" / "comparison.csv") as f:
        assert len({r["inputs_sha256"] for r in csv.DictReader(f)} | {rows[0]["inputs_sha256"]}) == 1


def test_source_entry_must_exist_without_a_folder(compose_compare):
    with pytest.raises(UserError, match="method.source_entry"):
        run(compose_compare("method.source_entry=nope"))
