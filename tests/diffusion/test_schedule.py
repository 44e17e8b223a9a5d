"""Schedule arithmetic checked against hand-computed values on a 3-step table ᾱ = (0.9, 0.5, 0.2).

Hand table (SNR = ᾱ / (1 − ᾱ)):

    t   ᾱ     1−ᾱ   SNR    P2 γ=1,k=1 = 1/(1+SNR)   P2 γ=2   min-SNR-5 = min(SNR,5)/SNR
    0   0.9   0.1   9      0.1                      0.01     5/9
    1   0.5   0.5   1      0.5                      0.25     1
    2   0.2   0.8   0.25   0.8                      0.64     1
"""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffedit_lab.diffusion import schedule
from diffedit_lab.utils.errors import UserError

AC = torch.tensor([0.9, 0.5, 0.2])
T = torch.tensor([0, 1, 2])


def close(actual, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=torch.float32)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.float(), expected, atol=atol, rtol=1e-6)


def test_alpha_bar_gathers_per_timestep():
    close(schedule.alpha_bar(AC, T), [0.9, 0.5, 0.2])
    close(schedule.alpha_bar(AC, 1), torch.tensor(0.5))  # python int → 0-d tensor
    assert schedule.alpha_bar(AC.double(), T).dtype == torch.float32


def test_snr():
    close(schedule.snr(AC, T), [9.0, 1.0, 0.25], atol=1e-5)


@pytest.mark.parametrize(
    ("gamma", "expected"),
    [(1.0, [0.1, 0.5, 0.8]), (2.0, [0.01, 0.25, 0.64])],
)
def test_weight_p2_k1(gamma, expected):
    close(schedule.weight_p2(AC, T, gamma=gamma, k=1.0), expected)
    close(schedule.loss_weight("p2", AC, T, gamma=gamma, k=1.0), expected)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0, 50.0])
def test_weight_p2_with_k1_is_one_minus_alpha_bar_to_gamma(gamma):
    # (1 − ᾱ)^γ from the hand table: 0.1^γ, 0.5^γ, 0.8^γ
    expected = [0.1**gamma, 0.5**gamma, 0.8**gamma]
    torch.testing.assert_close(schedule.weight_p2(AC, T, gamma=gamma), torch.tensor(expected), rtol=1e-5, atol=1e-30)


def test_weight_p2_k0_is_inverse_snr():
    close(schedule.weight_p2(AC, T, gamma=1.0, k=0.0), [1 / 9, 1.0, 4.0], atol=1e-5)


def test_weight_min_snr():
    close(schedule.weight_min_snr(AC, T, gamma=5.0), [5 / 9, 1.0, 1.0])
    close(schedule.loss_weight("min_snr", AC, T, gamma=5.0), [5 / 9, 1.0, 1.0])
    # γ = 0.5 clips every step here: 0.5/9, 0.5/1, 0.25/0.25
    close(schedule.weight_min_snr(AC, T, gamma=0.5), [0.5 / 9, 0.5, 1.0])


def test_weight_constant_and_one_minus_alpha():
    close(schedule.loss_weight("constant", AC, T), [1.0, 1.0, 1.0])
    close(schedule.loss_weight("one_minus_alpha", AC, T), [0.1, 0.5, 0.8])


def test_weights_are_per_sample_for_batched_t():
    t = torch.tensor([2, 0, 2, 1])
    close(schedule.alpha_bar(AC, t), [0.2, 0.9, 0.2, 0.5])
    close(schedule.snr(AC, t), [0.25, 9.0, 0.25, 1.0], atol=1e-5)
    close(schedule.loss_weight("p2", AC, t, gamma=2.0), [0.64, 0.01, 0.64, 0.25])
    close(schedule.loss_weight("min_snr", AC, t, gamma=5.0), [1.0, 5 / 9, 1.0, 1.0])
    close(schedule.loss_weight("constant", AC, t), [1.0, 1.0, 1.0, 1.0])
    # any shape of t: the result is shaped like t
    close(schedule.loss_weight("one_minus_alpha", AC, torch.tensor([[0, 1], [2, 2]])), [[0.1, 0.5], [0.8, 0.8]])


def test_unknown_weighting_is_user_error():
    with pytest.raises(UserError, match="unknown loss weighting 'p3'") as info:
        schedule.loss_weight("p3", AC, T)
    for name in ("constant", "min_snr", "one_minus_alpha", "p2"):
        assert name in str(info.value)


def test_add_noise_hand_cases():
    ac = torch.tensor([0.25, 0.81])
    ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    close(schedule.add_noise(ones, zeros, ac, torch.tensor([0])), torch.full((1, 1, 2, 2), 0.5))  # √0.25·1
    close(schedule.add_noise(zeros, ones, ac, torch.tensor([0])), torch.full((1, 1, 2, 2), math.sqrt(0.75)))
    # per-sample t: sample 0 at ᾱ=0.25, sample 1 at ᾱ=0.81; x0 = 2, ε = −1
    x0, eps = torch.full((2, 3, 2, 2), 2.0), torch.full((2, 3, 2, 2), -1.0)
    out = schedule.add_noise(x0, eps, ac, torch.tensor([0, 1]))
    close(out[0], torch.full((3, 2, 2), 2 * 0.5 - math.sqrt(0.75)))
    close(out[1], torch.full((3, 2, 2), 2 * 0.9 - math.sqrt(0.19)))


def test_x0_from_eps_inverts_add_noise():
    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 8, 8, generator=g)
    eps = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = schedule.add_noise(x0, eps, ac, t)
    assert not torch.allclose(x_t, x0, atol=1e-2)
    torch.testing.assert_close(schedule.x0_from_eps(x_t, eps, ac, t), x0, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(schedule.eps_from_x0(x_t, x0, ac, t), eps, atol=1e-4, rtol=1e-4)
    # a scalar t applies to the whole batch
    x_t = schedule.add_noise(x0, eps, ac, 300)
    torch.testing.assert_close(schedule.x0_from_eps(x_t, eps, ac, 300), x0, atol=1e-5, rtol=1e-5)


def test_x0_from_eps_hand_case():
    # ᾱ = 0.25: x0 = (x_t − √0.75·ε) / 0.5; with x_t = 1, ε = 0 → 2
    close(
        schedule.x0_from_eps(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.tensor([0.25]), 0),
        torch.full((1, 1, 1, 1), 2.0),
    )


def test_expand_like_shapes():
    v = torch.tensor([1.0, 2.0, 3.0])
    out = schedule.expand_like(v, torch.zeros(3, 4, 5, 6))
    assert out.shape == (3, 1, 1, 1)
    assert torch.equal(out.flatten(), v)
    assert schedule.expand_like(v, torch.zeros(3, 7)).shape == (3, 1)
    assert schedule.expand_like(v, torch.zeros(3, 2, 2)).shape == (3, 1, 1)
    assert schedule.expand_like(torch.tensor(0.5), torch.zeros(3, 4, 5, 6)).shape == ()
    assert schedule.expand_like(v, torch.zeros(3, 1, 1, 1, dtype=torch.float64)).dtype == torch.float64
    # broadcasting scales each sample by its own value
    assert torch.equal((schedule.expand_like(v, torch.ones(3, 2, 2, 2)) * torch.ones(3, 2, 2, 2))[:, 0, 0, 0], v)
