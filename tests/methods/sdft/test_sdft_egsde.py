"""EGSDE's energies and step on hand cases, and the domain classifier's shapes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from diffedit_lab.methods.sdft.classifier import DomainClassifier
from diffedit_lab.methods.sdft.egsde import EGSDEGuidance, cosine_energy, energy_grad, low_pass


def test_low_pass_over_the_whole_image_is_the_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.allclose(low_pass(x, 4), torch.full_like(x, 7.5))
    assert torch.equal(low_pass(x, 1), x)


def test_faithfulness_gradient_by_hand():
    # factor = image size: L(y) is mean(y) everywhere, E = 16·(ȳ − x̄)², ∂E/∂y_ij = 2·(ȳ − x̄)
    y = torch.arange(16.0).reshape(1, 1, 4, 4) / 16  # ȳ = 0.46875
    x = torch.zeros(1, 1, 4, 4)
    grad = energy_grad(y, x, torch.tensor([3]), None, realism=500.0, faith=2.0, factor=4)
    assert torch.allclose(grad, torch.full_like(y, 2.0 * 2 * 0.46875))


def test_realism_gradient_by_hand():
    # features = the image itself; one position with two channels: y = (1, 0), x = (0, 1): cos = 0 and
    # ∂cos/∂y = x/(|y||x|) − cos·y/|y|² = (0, 1). With factor 1 the faithfulness term is ‖y − x‖², gradient 2(y − x).
    y = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    x = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1)
    assert float(cosine_energy(y, x)) == pytest.approx(0.0)
    assert float(cosine_energy(y, y)) == pytest.approx(1.0)
    grad = energy_grad(y, x, torch.tensor([0]), lambda a, t: a, realism=500.0, faith=0.5, factor=1)
    expected = 500.0 * torch.tensor([0.0, 1.0]) + 0.5 * 2 * torch.tensor([1.0, -1.0])
    assert torch.allclose(grad.flatten(), expected)


def test_guidance_step_weight_and_update_by_hand():
    ab = torch.tensor([0.9, 0.8, 0.7, 0.6])
    prior = SimpleNamespace(alphas_cumprod=ab, num_train_timesteps=4)
    source = torch.zeros(1, 1, 2, 2)
    noise = torch.ones(1, 1, 2, 2)
    g = EGSDEGuidance(prior, source, noise, num_steps=2, features=None, realism=0.0, faith=1.0, factor=1)
    assert g.stride == 2
    alpha = 0.6 / 0.8  # step t = 3 → 1
    assert g.step_weight(3) == pytest.approx((1 - alpha) / math.sqrt(alpha))
    alpha0 = 0.8  # the last step t = 1 → −1 (ᾱ_prev = 1)
    assert g.step_weight(1) == pytest.approx((1 - alpha0) / math.sqrt(alpha0))
    x = torch.full((1, 1, 2, 2), 0.5)
    out = g(0, torch.tensor(3), x)
    x_src = math.sqrt(1 - 0.8) * 1.0  # the source (zeros) noised to t = 1 with the fixed noise
    assert torch.allclose(out, x - g.step_weight(3) * 2 * (x - x_src))
    assert g(1, torch.tensor(1), x) is None  # the final image is left alone


def test_domain_classifier_shapes_and_time_dependence():
    torch.manual_seed(0)
    clf = DomainClassifier((8, 16), groups=8)
    x = torch.randn(3, 3, 32, 32)
    t = torch.tensor([0, 500, 999])
    assert clf.features(x, t).shape == (3, 16, 16, 16)
    logits = clf(x, t)
    assert logits.shape == (3,)
    assert not torch.allclose(logits, clf(x, torch.tensor([999, 0, 500])))
