"""W+ projector: schedule and regulariser by hand, and recovery of images the generator can make."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffedit_lab.models.projector import lr_schedule, noise_autocorrelation, project, run_projection
from diffedit_lab.testing.stylegan2 import tiny_generator
from diffedit_lab.utils.errors import UserError

STYLE_DIM = 32


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convs are dominated by threading overhead on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gen():
    return tiny_generator(32, style_dim=STYLE_DIM, n_mlp=2, seed=0)


@pytest.fixture(scope="module")
def target(gen):
    with torch.no_grad():
        w_true = gen.sample_wplus([7, 8])
        return w_true, gen(w_true)


@pytest.mark.parametrize(
    ("t", "factor"),
    [(0.0, 0.0), (0.025, 0.5), (0.05, 1.0), (0.5, 1.0), (0.875, 0.5), (1.0, 0.0)],
)
def test_lr_schedule_hand_values(t, factor):
    assert lr_schedule(t) == pytest.approx(factor, abs=1e-12)


def test_noise_autocorrelation_hand_values():
    # a constant map correlates perfectly with its shift: (mean 1)^2 per axis, per scale down to 8 px
    assert noise_autocorrelation([torch.ones(1, 1, 8, 8)]).item() == pytest.approx(2.0)
    assert noise_autocorrelation([torch.ones(1, 1, 16, 16)]).item() == pytest.approx(4.0)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1  # +-1, shift gives -1
    assert noise_autocorrelation([checker.view(1, 1, 8, 8)]).item() == pytest.approx(2.0)
    stripes = (torch.arange(8) % 2 * 2.0 - 1).view(1, 1, 1, 8).expand(1, 1, 8, 8)  # rows equal, cols flip
    assert noise_autocorrelation([stripes]).item() == pytest.approx(2.0)


def test_projection_recovers_a_generated_image(gen, target):
    w_true, image = target
    with torch.no_grad():
        start_codes = gen.mean_latent(512).unsqueeze(1).expand_as(w_true)
        start = F.mse_loss(gen(start_codes), image).item()
    w = project(gen, image, steps=100, lr=0.1, n_mean_latent=512, progress=False)
    assert w.shape == w_true.shape and not w.requires_grad
    with torch.no_grad():
        end = F.mse_loss(gen(w), image).item()
    assert end < start / 10, (start, end)


def test_projection_is_deterministic_and_leaves_generator_untouched(gen, target):
    _, image = target
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    flags = [p.requires_grad for p in gen.parameters()]
    a = run_projection(gen, image, steps=5, n_mean_latent=64, progress=False, seed=1)
    b = run_projection(gen, image, steps=5, n_mean_latent=64, progress=False, seed=1)
    c = run_projection(gen, image, steps=5, n_mean_latent=64, progress=False, seed=2)
    torch.testing.assert_close(a.w_plus, b.w_plus, rtol=0, atol=0)
    assert not torch.equal(a.w_plus, c.w_plus)
    assert len(a.losses) == 5 and all(math.isfinite(v) for v in a.losses)
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert [p.requires_grad for p in gen.parameters()] == flags


def test_init_codes_and_zero_steps_of_learning(gen, target):
    w_true, image = target
    # lr 0 and no code noise: the result is exactly the given initial codes
    w = project(gen, image, steps=2, lr=0.0, n_mean_latent=64, init=w_true[:1], latent_noise=0.0, progress=False)
    torch.testing.assert_close(w, w_true[:1].expand_as(w_true))
    w_mean = project(gen, image, steps=1, lr=0.0, n_mean_latent=64, latent_noise=0.0, progress=False)
    z = torch.randn(64, STYLE_DIM, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(w_mean, gen.mapping(z).mean(0).detach().expand_as(w_true))
    with pytest.raises(UserError, match="init"):
        project(gen, image, steps=1, init="encoder", progress=False)


def test_perceptual_term_alone_drives_the_fit_and_images_are_resized(gen, target):
    _, image = target
    small = F.interpolate(image, size=(16, 16), mode="area")
    calls = []

    def l1(x, y):
        calls.append(x.shape)
        return (x - y).abs().mean(dim=(1, 2, 3))

    res = run_projection(gen, small, steps=30, n_mean_latent=64, perceptual=l1, mse_weight=0.0, progress=False)
    assert calls[0] == (2, 3, 16, 16) and len(calls) == 30
    assert res.losses[-1] < 0.5 * res.losses[0]


def test_noise_optimisation_returns_normalised_maps(gen, target):
    _, image = target
    res = run_projection(gen, image, steps=3, n_mean_latent=64, optimize_noise=True, progress=False)
    assert res.noises is not None and len(res.noises) == gen.num_layers
    for i, n in enumerate(res.noises):
        assert n.shape == (2, 1, *getattr(gen.noises, f"noise_{i}").shape[2:])
        torch.testing.assert_close(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(n.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-5, rtol=0)
    with torch.no_grad():
        assert gen(res.w_plus, noise=res.noises).shape == image.shape


def test_bad_images_are_user_errors(gen):
    with pytest.raises(UserError, match="B, 3, H, W"):
        project(gen, torch.zeros(3, 32, 32), steps=1, progress=False)
    with pytest.raises(UserError, match="steps"):
        project(gen, torch.zeros(1, 3, 32, 32), steps=0, progress=False)
