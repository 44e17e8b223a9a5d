"""Per-sample kernels on one shared U-Net: both strategies equal modulating a copy of the U-Net sample by sample,
and the grouped strategy leaves the U-Net as it found it (also after an error)."""

from __future__ import annotations

import copy

import pytest
import torch

from diffedit_lab.models.rectifier import modulate, modulated_eps, select_layers
from diffedit_lab.models.rectifier.apply import grouped_kernels
from diffedit_lab.testing.priors import tiny_unet_prior


@pytest.fixture(scope="module")
def setup():
    prior = tiny_unet_prior(learned_variance=True)
    specs = select_layers(prior.unet)
    g = torch.Generator().manual_seed(3)
    b = 3
    deltas = {s.name: 0.2 * torch.randn(b, *s.shape, generator=g) for s in specs}
    modules = dict(prior.unet.named_modules())
    weights = modulate({s.name: modules[s.name].weight for s in specs}, deltas)
    x_t = torch.randn(b, 3, 32, 32, generator=g)
    t = torch.tensor([5, 300, 900])
    refs = []
    for i in range(b):  # the slow, obvious way: a modified copy of the U-Net per sample
        twin = copy.deepcopy(prior)
        with torch.no_grad():
            for name, w in weights.items():
                twin.unet.get_parameter(name).copy_(w[i])
        refs.append(twin.predict_eps(x_t[i : i + 1], t[i : i + 1]))
    return prior, weights, x_t, t, torch.cat(refs)


@pytest.mark.parametrize("strategy", ["grouped", "vmap"])
def test_per_sample_modulation_equals_a_modified_copy_per_sample(setup, strategy):
    prior, weights, x_t, t, reference = setup
    with torch.no_grad():
        out = modulated_eps(prior, x_t, t, weights, strategy)
    assert (reference - prior.predict_eps(x_t, t)).abs().max() > 1e-2  # the modulation matters
    torch.testing.assert_close(out, reference, rtol=0, atol=2e-5)


def test_grouped_kernels_restore_the_convolutions(setup):
    prior, weights, x_t, t, _ = setup
    kernels = {k.removesuffix(".weight"): v for k, v in weights.items()}
    conv = prior.unet.get_submodule(next(iter(kernels)))
    with grouped_kernels(prior.unet, kernels):
        assert "forward" in conv.__dict__
    assert "forward" not in conv.__dict__
    with pytest.raises(ValueError, match="3 per-sample kernels for a batch of 1"):
        with grouped_kernels(prior.unet, kernels):
            prior.predict_eps(x_t[:1], t[:1])
    assert "forward" not in conv.__dict__
    with torch.no_grad():
        torch.testing.assert_close(prior.predict_eps(x_t, t), prior.unet(x_t, t).sample[:, :3])


def test_unknown_strategy_is_refused(setup):
    prior, weights, x_t, t, _ = setup
    with pytest.raises(ValueError, match="unknown modulation strategy"):
        modulated_eps(prior, x_t, t, weights, "loop")
