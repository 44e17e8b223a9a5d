"""The CLIP list tool for SDFT's data recipes: the scores by hand, and the command on a folder of real photos."""

from __future__ import annotations

import math

import pytest
import torch

from diffedit_lab.tools import clip_filter


def test_exclude_probability_is_the_two_way_softmax_by_hand():
    cos = torch.tensor([[0.30, 0.25], [0.20, 0.22]])
    prob, mask = clip_filter.select("exclude", cos, threshold=0.5, top_k=None, logit_scale=100.0)
    # softmax(100·[0.30, 0.25])₀ = e^30 / (e^30 + e^25) = 1 / (1 + e^-5)
    expected = [1 / (1 + math.exp(-5)), 1 / (1 + math.exp(2))]
    torch.testing.assert_close(prob, torch.tensor(expected))
    assert mask.tolist() == [True, False]


def test_include_top_k_and_threshold():
    cos = torch.tensor([[0.1], [0.4], [0.3], [0.2]])
    _, top = clip_filter.select("include", cos, threshold=None, top_k=2, logit_scale=100.0)
    assert top.tolist() == [False, True, True, False]
    _, thr = clip_filter.select("include", cos, threshold=0.25, top_k=None, logit_scale=100.0)
    assert thr.tolist() == [False, True, True, False]


def test_command_writes_a_list_the_datamodule_reads(tmp_path, cache_dir):
    from diffedit_lab.data.datamodule import ImageDataModule
    from diffedit_lab.data.samples import ensure_samples

    root = tmp_path / "photos"
    ensure_samples(root, ["astronaut", "chelsea", "coffee", "rocket"])
    out = tmp_path / "keep.txt"
    args = ["include", "--root", str(root), "--positive", "a cat", "--top-k", "2", "--out", str(out)]
    assert clip_filter.main([*args, "--clip-model", "tiny", "--batch-size", "3"]) == 0
    listed = out.read_text().split()
    assert len(listed) == 2 and all((root / n).is_file() for n in listed)
    rows = (tmp_path / "keep.txt.csv").read_text().splitlines()
    assert rows[0] == "path,cosine,listed" and len(rows) == 5
    dm = ImageDataModule(root=root, include_list=str(out), resolution=32, split_mode="folders")
    assert sorted(dm.dataset("train").keys) == sorted(listed)


@pytest.mark.parametrize(
    "args",
    [
        ["exclude", "--positive", "glasses"],  # no --negative
        ["include", "--positive", "x"],  # neither --top-k nor --threshold
        ["include", "--positive", "x", "--top-k", "0"],
        ["exclude", "--positive", "x", "--negative", "y", "--threshold", "1.5"],
    ],
)
def test_bad_arguments_are_one_line(args, tmp_path, capsys):
    assert clip_filter.main([*args, "--root", str(tmp_path), "--out", str(tmp_path / "o.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
