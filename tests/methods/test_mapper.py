"""LevelsMapper (SDD's manipulator): level switches, layer ranges, the edit formula, and hand-checked
arithmetic of its building blocks (PixelNorm over the LAYER axis, equalised-LR linear layers, lr multiplier
0.01)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffedit_lab.models.mapper import GROUPS, LevelsMapper
from diffedit_lab.models.stylegan2 import EqualLinear
from diffedit_lab.utils.errors import UserError

RANGES = {"coarse": slice(0, 4), "medium": slice(4, 8), "fine": slice(8, None)}
SQRT2 = math.sqrt(2.0)


def _codes(b: int = 2, layers: int = 10, dim: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, layers, dim, generator=torch.Generator().manual_seed(seed))


def _mapper(levels=None, dim: int = 32, **kw) -> LevelsMapper:
    torch.manual_seed(0)
    return LevelsMapper(dim=dim, levels=levels, **kw)


def test_output_shapes_full_and_tiny():
    full = _mapper(dim=512)
    assert full(_codes(2, 18, 512)).shape == (2, 18, 512)
    assert full.edit(_codes(2, 18, 512)).shape == (2, 18, 512)
    tiny = _mapper(dim=32)
    assert tiny(_codes(3, 10, 32)).shape == (3, 10, 32)


BITS = [bits for bits in itertools.product([False, True], repeat=3) if any(bits)]
ALL_COMBOS = [dict(zip(GROUPS, bits, strict=True)) for bits in BITS]


@pytest.mark.parametrize("levels", ALL_COMBOS, ids=lambda lv: "+".join(g for g in GROUPS if lv[g]))
def test_level_switches_zero_exactly_the_disabled_ranges(levels):
    mapper = _mapper(levels)
    w = _codes()
    delta = mapper(w)
    edited = mapper.edit(w)
    enabled = sorted(g for g in GROUPS if levels[g])
    assert sorted(mapper.mappers.keys()) == enabled, "no parameters for off groups"
    for g, rng in RANGES.items():
        if levels[g]:
            # every layer of an enabled group is edited (each (B, dim) row has a non-zero entry)
            assert (delta[:, rng].abs().amax(dim=-1) > 0).all(), g
            assert not torch.equal(edited[:, rng], w[:, rng]), g
        else:
            assert torch.count_nonzero(delta[:, rng]) == 0, g
            assert torch.equal(edited[:, rng], w[:, rng]), f"{g} layers must stay untouched"


def test_missing_level_keys_default_to_off():
    mapper = _mapper({"fine": True})
    assert mapper.levels == {"coarse": False, "medium": False, "fine": True}
    delta = mapper(_codes())
    assert torch.count_nonzero(delta[:, :8]) == 0 and torch.count_nonzero(delta[:, 8:]) > 0


@pytest.mark.parametrize(
    "levels",
    [
        {"coarse": False, "medium": False, "fine": False},
        {"medium": False},
        {"coarse": True, "hair": True},
        {"Fine": True},
    ],
)
def test_invalid_levels_raise_user_error(levels):
    with pytest.raises(UserError):
        LevelsMapper(dim=8, levels=levels)


def test_groups_see_only_their_layers_and_norm_couples_layers_within_a_group():
    mapper = _mapper()
    w = _codes(1)
    base = mapper(w)
    w2 = w.clone()
    w2[:, 4] += 3.0  # a medium layer
    out = mapper(w2)
    torch.testing.assert_close(out[:, :4], base[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 8:], base[:, 8:], rtol=0, atol=0)
    # PixelNorm over the layer axis: layer 5's output depends on layer 4's input (same group)
    assert not torch.allclose(out[:, 5], base[:, 5])
    w3 = w.clone()
    w3[:, 9] += 3.0  # a fine layer
    out = mapper(w3)
    torch.testing.assert_close(out[:, :8], base[:, :8], rtol=0, atol=0)
    assert not torch.allclose(out[:, 8], base[:, 8])


def test_edit_formula_and_edit_scale():
    mapper = _mapper({"coarse": True, "medium": True, "fine": False})
    w = _codes()
    delta = mapper(w)
    assert delta.abs().amax() > 0
    torch.testing.assert_close(mapper.edit(w), w + 0.1 * delta)
    half = _mapper({"coarse": True, "medium": True, "fine": False}, edit_scale=0.5)
    half.load_state_dict(mapper.state_dict())
    torch.testing.assert_close(half(w), delta)
    torch.testing.assert_close(half.edit(w), w + 0.5 * delta)
    assert not torch.allclose(half.edit(w), mapper.edit(w))


def test_whole_mapper_by_hand_on_one_dimensional_codes():
    """dim=1, 2 layers per group, stored weights 100 → effective weight 100·0.01/√1 = 1, biases 0.

    Each group: n = w / rms_over_its_layers(w); each layer y = √2·lrelu_0.2(x), so two layers give 2n for
    n ≥ 0 and 0.08n for n < 0.
      coarse [3, 4, 0, 0]: rms = √(25/4) = 2.5 → n = [1.2, 1.6, 0, 0] → Δ = [2.4, 3.2, 0, 0]
      medium [-2, 2, 2, 2]: rms = 2 → n = [-1, 1, 1, 1] → Δ = [-0.08, 2, 2, 2]
      fine   [1, 7]: rms = √(50/2) = 5 → n = [0.2, 1.4] → Δ = [0.4, 2.8]
    """
    mapper = LevelsMapper(dim=1, num_layers=2)
    with torch.no_grad():
        for name, p in mapper.named_parameters():
            p.fill_(100.0 if name.endswith("weight") else 0.0)
    w = torch.tensor([3.0, 4, 0, 0, -2, 2, 2, 2, 1, 7]).view(1, 10, 1)
    delta = torch.tensor([2.4, 3.2, 0, 0, -0.08, 2, 2, 2, 0.4, 2.8]).view(1, 10, 1)
    torch.testing.assert_close(mapper(w), delta, rtol=1e-5, atol=1e-6)
    edited = torch.tensor([3.24, 4.32, 0, 0, -2.008, 2.2, 2.2, 2.2, 1.04, 7.28]).view(1, 10, 1)
    torch.testing.assert_close(mapper.edit(w), edited, rtol=1e-5, atol=1e-6)

    only_medium = LevelsMapper(dim=1, num_layers=2, levels={"medium": True})
    medium_state = {k: v for k, v in mapper.state_dict().items() if k.startswith("mappers.medium")}
    only_medium.load_state_dict(medium_state)
    expected = torch.tensor([0.0, 0, 0, 0, -0.08, 2, 2, 2, 0, 0]).view(1, 10, 1)
    torch.testing.assert_close(only_medium(w), expected, rtol=1e-5, atol=1e-6)


def test_group_pixelnorm_normalises_over_the_layer_axis():
    """x = [[[3, 4], [0, 0]]] (1 code, 2 layers, 2 dims).

    Over the LAYER axis (dim=1): feature 0 → 3/√((9+0)/2) = √2, feature 1 → 4/√((16+0)/2) = √2;
    layer 1 stays 0.
    Over the last axis (per layer): [3, 4]/√((9+16)/2) = [0.6√2, 0.8√2]; layer 1 stays 0.
    """
    x = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    layer_axis = torch.tensor([[[SQRT2, SQRT2], [0.0, 0.0]]])
    last_axis = torch.tensor([[[0.6 * SQRT2, 0.8 * SQRT2], [0.0, 0.0]]])
    mapper = _mapper(dim=2)
    for g in GROUPS:
        out = mapper.mappers[g].norm(x)
        torch.testing.assert_close(out, layer_axis, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(out, last_axis, atol=1e-3)


def test_equal_linear_lr_mul_by_hand():
    """in=2, lr_mul=0.01: scale = 0.01/√2; stored w = [100, 200], b = 50, x = [1, 1].

    linear: (100 + 200)·0.01/√2 + 50·0.01 = 3/√2 + 0.5 ≈ 2.62132
    fused lrelu: √2·2.62132 = 3 + 0.5√2 ≈ 3.70711
    negated weights: −3/√2 + 0.5 ≈ −1.62132 → √2·0.2·(−1.62132) = −0.6 + 0.1√2 ≈ −0.45858
    """
    x = torch.ones(1, 2)
    for activation, pos, neg in [
        (None, 3 / SQRT2 + 0.5, -3 / SQRT2 + 0.5),
        ("fused_lrelu", 3 + 0.5 * SQRT2, -0.6 + 0.1 * SQRT2),
    ]:
        lin = EqualLinear(2, 1, lr_mul=0.01, activation=activation)
        assert lin.scale == pytest.approx(0.01 / SQRT2)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[100.0, 200.0]]))
            lin.bias.fill_(50.0)
        assert lin(x).item() == pytest.approx(pos, rel=1e-6)
        with torch.no_grad():
            lin.weight.neg_()
        assert lin(x).item() == pytest.approx(neg, rel=1e-6)


def test_mapper_layers_are_equalised_with_lr_mul_001():
    mapper = _mapper(dim=512, levels={"medium": True})
    layers = list(mapper.mappers["medium"].layers)
    assert len(layers) == 4
    for lin in layers:
        assert isinstance(lin, EqualLinear)
        assert lin.lr_mul == 0.01 and lin.activation == "fused_lrelu"
        assert lin.scale == pytest.approx(0.01 / math.sqrt(512))
    # stored weights ~ N(0, 1/lr_mul²): std 100 (262144 samples: ±1% is > 7 standard errors)
    std = float(layers[0].weight.detach().std())
    assert abs(std - 100.0) < 1.0


def test_parameter_count_of_a_full_group():
    per_group = 4 * (512 * 512 + 512)
    assert per_group == 1_050_624
    full = _mapper(dim=512)
    for g in GROUPS:
        assert sum(p.numel() for p in full.mappers[g].parameters()) == per_group
    assert sum(p.numel() for p in full.parameters()) == 3 * per_group
    medium_only = _mapper(dim=512, levels={"coarse": False, "medium": True, "fine": False})
    assert sum(p.numel() for p in medium_only.parameters()) == per_group
