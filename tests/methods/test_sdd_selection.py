"""SDD timestep selection: gradient scores, the Hybrid Quality Score, every selection rule, sampling, and the
score table's CSV / plot / dict forms — all against hand-computed numbers."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.utils.errors import UserError

LN3 = math.log(3.0)
# softmax([0, ln 3]) = [1/4, 3/4];  H = −(¼ ln ¼ + ¾ ln ¾)
H_QUARTER = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))


def _table() -> sel.ScoreTable:
    # hqs by hand: l1 → [0, .5, 1]; entropy → [1, .5, 0] so 1 − H_norm = [0, .5, 1]; mean → [0, .5, 1]
    return sel.ScoreTable(timesteps=[100, 200, 300], entropy=[3.0, 2.0, 1.0], l1=[0.0, 1.0, 2.0])


# ----------------------------------------------------------------------------------------------- scores


def test_entropy_of_a_uniform_gradient_is_log_of_pixel_count():
    h, w = 4, 5
    g = torch.full((2, 3, h, w), 0.7)
    g[1] *= -3.0  # another magnitude, negative sign: still uniform over pixels
    torch.testing.assert_close(sel.gradient_entropy(g), torch.full((2,), math.log(h * w)))


def test_entropy_two_pixels_by_hand_and_sign_invariance():
    # channel means of |g| per pixel: pixel 0 → 0, pixel 1 → (ln3 + ln3 + ln3)/3 = ln 3
    g = torch.zeros(1, 3, 1, 2)
    g[0, :, 0, 1] = torch.tensor([LN3, -LN3, LN3])
    assert H_QUARTER == pytest.approx(0.5623351446188083, abs=1e-15)
    assert sel.gradient_entropy(g).item() == pytest.approx(H_QUARTER, abs=1e-6)
    assert sel.gradient_entropy(-g).item() == pytest.approx(H_QUARTER, abs=1e-6)
    # channel mean of |g| (not of g): [2ln3, −ln3, 2ln3] has |·|-mean 5ln3/3 but signed mean ln3
    g2 = torch.zeros(1, 3, 1, 2)
    g2[0, :, 0, 1] = torch.tensor([2 * LN3, -LN3, 2 * LN3])
    a = 5 * LN3 / 3
    p1 = math.exp(a) / (1 + math.exp(a))
    expected = -((1 - p1) * math.log(1 - p1) + p1 * math.log(p1))
    assert sel.gradient_entropy(g2).item() == pytest.approx(expected, abs=1e-6)


def test_concentrated_gradient_has_lower_entropy_than_uniform():
    uniform = torch.ones(1, 3, 4, 4)
    peaked = torch.zeros(1, 3, 4, 4)
    peaked[0, :, 2, 1] = 100.0
    h_uniform, h_peaked = sel.gradient_entropy(uniform).item(), sel.gradient_entropy(peaked).item()
    assert h_uniform == pytest.approx(math.log(16), abs=1e-6)
    assert h_peaked < 1e-6  # p ≈ one-hot
    assert sel.gradient_entropy(torch.cat([uniform, peaked])).shape == (2,)


def test_l1_is_mean_absolute_value_per_sample():
    g = torch.zeros(2, 1, 2, 2)
    g[0, 0] = torch.tensor([[1.0, -2.0], [3.0, -4.0]])  # (1 + 2 + 3 + 4) / 4 = 2.5
    g[1, 0] = torch.tensor([[-8.0, 0.0], [0.0, 0.0]])  # 8 / 4 = 2
    torch.testing.assert_close(sel.gradient_l1(g), torch.tensor([2.5, 2.0]))
    torch.testing.assert_close(sel.gradient_l1(-g), torch.tensor([2.5, 2.0]))


@pytest.mark.parametrize(
    ("entropy", "l1", "expected"),
    [
        ([3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [0.0, 0.5, 1.0]),
        ([1.0, 1.0, 1.0], [0.0, 1.0, 2.0], [0.25, 0.5, 0.75]),  # constant entropy normalises to 0.5
        ([2.0, 4.0, 3.0], [1.0, 1.5, 3.0], [0.5, 0.125, 0.75]),  # ½·([0,.25,1] + [1,0,.5])
        ([5.0, 5.0], [2.0, 2.0], [0.5, 0.5]),  # both constant: ½·(0.5 + 0.5)
    ],
)
def test_hybrid_quality_score_by_hand(entropy, l1, expected):
    assert sel.hybrid_quality_score(entropy, l1) == pytest.approx(expected, abs=1e-12)


def test_hqs_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        sel.hybrid_quality_score([1.0, 2.0], [1.0])


# ------------------------------------------------------------------------------------------------ rules


@pytest.mark.parametrize(
    ("rule", "score", "timesteps", "weights"),
    [
        ("max", "hqs", [300], [1.0]),
        ("min", "hqs", [100], [0.0]),
        ("min", "entropy", [300], [1.0]),
        ("max", "entropy", [100], [3.0]),
        ("max", "l1", [300], [2.0]),
        ("min", "l1", [100], [0.0]),
        ("below_0.6", "hqs", [100, 200], [0.0, 0.5]),
        ("above_0.4", "hqs", [200, 300], [0.5, 1.0]),
        ("above_0.5", "hqs", [300], [1.0]),  # strict
        ("below_2.5", "entropy", [200, 300], [1.0, 2.0]),  # entropy: lower is better, weight = max(H) - H
        ("above_-1", "l1", [100, 200, 300], [0.0, 1.0, 2.0]),
    ],
)
def test_table_rules(rule, score, timesteps, weights):
    s = sel.select(rule, _table(), score=score)
    assert s.timesteps == timesteps
    assert s.weights == pytest.approx(weights)
    assert s.random_range is None
    assert sel.needs_scan(rule)


@pytest.mark.parametrize("rule", ["below_0", "above_1", "below_-5", "above_1e9"])
def test_thresholds_that_keep_nothing_are_user_errors(rule):
    with pytest.raises(UserError, match="keeps no timestep"):
        sel.select(rule, _table(), score="hqs")


@pytest.mark.parametrize(
    "rule",
    ["above_", "above_x", "below_high", "above", "median", "", "fixed_", "fixed_abc", "fixed_8.5", "Max"],
)
def test_bad_rule_strings_are_user_errors(rule):
    with pytest.raises(UserError):
        sel.select(rule, _table(), score="hqs")


def test_unknown_score_and_nan_scores_are_user_errors():
    with pytest.raises(UserError, match="unknown selection score"):
        sel.select("max", _table(), score="variance")
    nan_table = sel.ScoreTable(timesteps=[1, 2], entropy=[1.0, float("nan")], l1=[0.0, 1.0])
    with pytest.raises(UserError, match="NaN"):
        sel.select("max", nan_table, score="entropy")


@pytest.mark.parametrize("rule", ["min", "max", "below_0.5", "above_0.5"])
def test_rules_needing_a_scan_without_table_are_user_errors(rule):
    with pytest.raises(UserError, match="scan"):
        sel.select(rule, None)


def test_fixed_rule():
    assert not sel.needs_scan("fixed_500")
    s = sel.select("fixed_500")  # no table needed
    assert s.timesteps == [500] and s.random_range is None
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        t = s.sample(3, g)
        assert t.dtype == torch.long and t.tolist() == [500, 500, 500]


BAD_T = [("fixed_-5", (20, 980)), ("random", (10, 5)), ("random", (-1, 5))]


@pytest.mark.parametrize(("rule", "random_range"), BAD_T)
def test_negative_or_reversed_timesteps_are_user_errors(rule, random_range):
    # fixed_-5 would index ᾱ[-5], silently training at t = T − 5
    with pytest.raises(UserError):
        sel.select(rule, random_range=random_range)


def test_random_rule_samples_uniformly_inside_its_range():
    assert not sel.needs_scan("random")
    default = sel.select("random")
    assert default.random_range == (20, 980)
    assert default.timesteps[0] == 20 and default.timesteps[-1] == 980 and len(default.timesteps) == 961
    s = sel.select("random", random_range=(5, 7))
    assert s.random_range == (5, 7) and s.timesteps == [5, 6, 7]
    g = torch.Generator().manual_seed(0)
    draws = [s.sample(2, g) for _ in range(300)]
    for t in draws:
        assert t.shape == (2,) and t[0] == t[1], "one t per step, shared by the batch"
    values = [int(t[0]) for t in draws]
    assert set(values) == {5, 6, 7}  # inclusive bounds, all reached
    assert all(70 < values.count(v) < 130 for v in (5, 6, 7))  # ~100 each
    wide = [int(default.sample(1, g)) for _ in range(200)]
    assert min(wide) >= 20 and max(wide) <= 980 and len(set(wide)) > 50


# ------------------------------------------------------------------------------------------- sampling


def test_weighted_sampling_follows_weights_and_uniform_ignores_them():
    s = sel.Selection(timesteps=[100, 200], weights=[0.0, 1.0])
    g = torch.Generator().manual_seed(0)
    assert {int(s.sample(2, g, weighted=True)[0]) for _ in range(100)} == {200}
    uniform = [int(s.sample(1, g, weighted=False)) for _ in range(400)]
    assert set(uniform) == {100, 200} and 150 < uniform.count(200) < 250
    skewed = sel.Selection(timesteps=[1, 2], weights=[1.0, 3.0])
    draws = [int(skewed.sample(1, g, weighted=True)) for _ in range(2000)]
    assert 0.70 < draws.count(2) / 2000 < 0.80  # 3/4 expected; sd ≈ 0.01
    # all-zero weights: weighting is impossible, fall back to uniform
    zero = sel.Selection(timesteps=[1, 2], weights=[0.0, 0.0])
    assert {int(zero.sample(1, g, weighted=True)) for _ in range(100)} == {1, 2}


def test_sampling_is_reproducible_with_a_seeded_generator():
    s = sel.Selection(timesteps=[100, 200, 300, 400])
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first = [int(s.sample(1, g1)) for _ in range(40)]
    assert first == [int(s.sample(1, g2)) for _ in range(40)]
    assert set(first) == {100, 200, 300, 400}


# -------------------------------------------------------------------------------------------- the table


def test_score_table_fills_hqs_and_columns():
    t = _table()
    assert t.hqs == pytest.approx([0.0, 0.5, 1.0])
    assert t.column("entropy") == [3.0, 2.0, 1.0] and t.column("l1") == [0.0, 1.0, 2.0]
    with pytest.raises(UserError):
        t.column("nope")


def test_score_table_csv_rows_by_hand(tmp_path):
    table = sel.ScoreTable(timesteps=[100, 200, 300], entropy=[3.0, 2.0, 1.0], l1=[0.0, 1.0, 2.0])
    path = tmp_path / "scores.csv"
    table.write_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["t", "entropy", "l1", "hqs"],
        ["100", "3", "0", "0"],
        ["200", "2", "1", "0.5"],
        ["300", "1", "2", "1"],
    ]
    # 8 significant digits: entropy 1/3 → 0.33333333, l1 [0, 1/3] → hqs [½·(0+1), ½·(1+0)] = [0.5, 0.5]
    thirds = sel.ScoreTable(timesteps=[5, 10], entropy=[1 / 3, 2 / 3], l1=[0.0, 1 / 3])
    thirds.write_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1:] == [["5", "0.33333333", "0", "0.5"], ["10", "0.66666667", "0.33333333", "0.5"]]


def test_score_table_plot_is_written(tmp_path):
    path = tmp_path / "scores.png"
    _table().plot(path, selected=[300], title="white hair: hqs, rule max")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_dict_round_trips():
    t = _table()
    back = sel.ScoreTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t
    # hqs missing (or empty) in the dict: recomputed from entropy and l1; string timesteps become ints
    d = {"timesteps": ["100", "200", "300"], "entropy": [1.0, 1.0, 1.0], "l1": [0.0, 1.0, 2.0]}
    partial = sel.ScoreTable.from_dict(d)
    assert partial.timesteps == [100, 200, 300] and partial.hqs == pytest.approx([0.25, 0.5, 0.75])
    # a stored hqs is kept as stored
    assert sel.ScoreTable.from_dict({**d, "hqs": [9.0, 8.0, 7.0]}).hqs == [9.0, 8.0, 7.0]
    s = sel.select("above_0.4", t)
    assert s.to_dict() == {"timesteps": [200, 300], "weights": [0.5, 1.0], "random_range": None}
    assert sel.select("random", random_range=(3, 4)).to_dict() == {
        "timesteps": [3, 4],
        "weights": None,
        "random_range": [3, 4],
    }
