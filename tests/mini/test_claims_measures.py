"""make mini's bookkeeping: claim records and the measures, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffedit_lab.mini import measures
from diffedit_lab.mini.claims import make_claim, mean_sd
from diffedit_lab.mini.evaluator import DigitClassifier, random_shift
from diffedit_lab.mini.report import claims_markdown


def test_mean_sd_by_hand():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([5.0]) == (5.0, 0.0)


def test_claim_holds_only_when_better_on_every_seed():
    c = make_claim("p", "c", "FID", False, [0, 1, 2], [1.0, 2.0, 3.0], [2.0, 3.0, 3.5], "ours", "base")
    assert c["holds"] and c["better_on_seeds"] == 3 and c["ours"] == 2.0 and math.isclose(c["baseline"], 8.5 / 3)
    c = make_claim("p", "c", "FID", False, [0, 1, 2], [1.0, 2.0, 4.0], [2.0, 3.0, 3.5], "ours", "base")
    assert not c["holds"] and c["better_on_seeds"] == 2  # better on average, not on every seed
    c = make_claim("p", "c", "PSNR", True, [0, 1, 2], [3.0, 3.0, 3.0], [2.0, 2.0, 3.0], "ours", "base")
    assert not c["holds"]  # a tie is not better
    keys = {"paper", "claim", "metric", "higher_is_better", "ours", "baseline", "seeds", "ours_per_seed",
            "baseline_per_seed", "holds"}  # fmt: skip
    assert keys <= set(c)
    with pytest.raises(ValueError):
        make_claim("p", "c", "m", True, [0, 1], [1.0], [1.0, 2.0], "a", "b")
    assert "| p | c | PSNR ↑ |" in claims_markdown([c]) and "**no**" in claims_markdown([c])


class _Identity(nn.Module):
    """Features = the first two pixel values; logits = those two features."""

    def features(self, x):
        return x.flatten(1)[:, :2]

    def forward(self, x):
        return self.features(x)


def test_diversity_and_class_rate_by_hand():
    x = torch.zeros(3, 3, 2, 2)
    x.view(3, -1)[1, 0] = 3.0  # features (0,0), (3,0), (0,4)
    x.view(3, -1)[2, 1] = 4.0
    # pairwise distances 3, 4, 5 → mean over ordered pairs = (3 + 4 + 5) · 2 / 6 = 4
    assert math.isclose(measures.diversity(_Identity(), x), 4.0, rel_tol=1e-6)
    assert measures.class_rate(_Identity(), x, 1) == pytest.approx(1 / 3)  # only (0,4) has argmax 1


def test_paired_identical_and_offset():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    same = measures.paired(x, x)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5) and same["mse"] == 0.0
    ref = torch.full((1, 3, 8, 8), -1.0)
    p = measures.paired(ref + 0.2, ref)  # 0.1 in [0, 1] pixels everywhere: MSE 0.01, PSNR 20 dB
    assert p["mse"] == pytest.approx(0.01, rel=1e-4) and p["psnr"] == pytest.approx(20.0, rel=1e-4)


def test_fid_kid_zero_for_the_same_set_and_positive_apart():
    torch.manual_seed(0)
    model = DigitClassifier().eval()
    real = torch.rand(40, 3, 32, 32) * 2 - 1
    fid, kid = measures.fid_kid(model, real, real)
    assert abs(fid) < 1e-2 and abs(kid) < 1e-2
    flat = torch.zeros_like(real)  # one grey image 40 times: other mean, no spread
    fid2, kid2 = measures.fid_kid(model, flat, real)
    assert fid2 > 1e-3 and kid2 > 1e-4


def test_random_shift_moves_within_bounds():
    x = torch.full((4, 3, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0
    y = random_shift(x, torch.Generator().manual_seed(0), pixels=2)
    assert y.shape == x.shape and torch.equal((y > 0).sum((1, 2, 3)), (x > 0).sum((1, 2, 3)))  # nothing cut off
