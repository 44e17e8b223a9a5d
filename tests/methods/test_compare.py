"""``experiment=compare_demo``: every method on the same images, one row each with every metric, figure, report."""

from __future__ import annotations

import csv

import pytest

from diffedit_lab.run import run
from diffedit_lab.utils.errors import UserError


@pytest.fixture
def compose_compare(tmp_path, cache_dir):
    from diffedit_lab.utils.config import compose_config
    from tests.helpers import CONF

    def _compose(*overrides: str, out=None):
        base = ["experiment=compare_demo", "logger=none", f"paths.output_dir={out or tmp_path / 'run'}",
                f"paths.cache_dir={cache_dir}", "method.num_images=2", "~method.entries.sdedit_50",
                "~method.entries.sdedit_70"]  # fmt: skip
        return compose_config([*base, *overrides], config_dir=CONF)

    return _compose


def test_compare_writes_one_row_per_method_on_the_same_images(compose_compare, tmp_path):
    out = tmp_path / "run"
    result = run(compose_compare("method.entries.sdd.overrides=['method.fit.steps=2']", out=out))
    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["entry"] for r in rows] == ["sdd", "sdedit_30", "ddib"]  # the source entry first
    assert len({r["inputs_sha256"] for r in rows}) == 1, "every method edited the same pixels"
    for r in rows:
        for col in ("clip_dir", "identity", "fid", "kid", "latency_ms_per_image", "train_s"):
            assert r[col] not in ("", "nan"), (r["entry"], col)
        assert float(r["num_images"]) == 2
    assert float(rows[0]["train_s"]) > 0 and float(rows[1]["train_s"]) == 0  # SDD trained here, SDEdit has nothing
    for f in ("comparison.md", "comparison.png", "report.md"):
        assert (out / f).is_file(), f
    assert "comparison.png" in (out / "report.md").read_text()
    assert result.metrics["compare/sdd/clip_dir"] == pytest.approx(float(rows[0]["clip_dir"]), rel=1e-4)

    # trained weights given by path are reused: no training, same mapper → the same SDD numbers
    weights = out / "methods" / "sdd" / "mapper.pt"
    only_sdd = ["~method.entries.sdedit_30", "~method.entries.ddib"]
    again = run(compose_compare(f"method.entries.sdd.weights={weights}", *only_sdd, out=tmp_path / "again"))
    assert again.metrics["compare/sdd/train_s"] == 0
    assert again.metrics["compare/sdd/clip_dir"] == pytest.approx(float(rows[0]["clip_dir"]), abs=1e-5)


def test_source_entry_must_exist_without_a_folder(compose_compare):
    with pytest.raises(UserError, match="method.source_entry"):
        run(compose_compare("method.source_entry=nope"))
