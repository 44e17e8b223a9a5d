"""SDFT's loss against hand computations: the posterior table, the KL and decoder NLL of L_vb, each term of the
total on a one-pixel stub network (numbers worked out here), and the terms on tiny U-Nets (learned and fixed σ)."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from diffedit_lab.methods.sdft.config import LossConfig
from diffedit_lab.methods.sdft.losses import (
    PosteriorTable,
    discretized_gaussian_nll,
    normal_kl,
    sdft_loss,
    vb_term,
)
from diffedit_lab.testing.priors import tiny_unet_prior
from diffedit_lab.utils.config import method_settings

BETAS = torch.tensor([0.1, 0.2, 0.3])
loss_config = functools.partial(method_settings, LossConfig, "sdft", "loss")  # conf/method/sdft.yaml's + overrides


def test_posterior_table_by_hand():
    tab = PosteriorTable(BETAS)
    # ᾱ = 0.9, 0.72, 0.504; ᾱ_prev = 1, 0.9, 0.72
    assert tab.alphas_cumprod.tolist() == pytest.approx([0.9, 0.72, 0.504])
    var1 = 0.2 * (1 - 0.9) / (1 - 0.72)
    var2 = 0.3 * (1 - 0.72) / (1 - 0.504)
    assert tab.log_var_clipped.tolist() == pytest.approx([math.log(var1), math.log(var1), math.log(var2)], rel=1e-6)
    assert tab.coef_x0.tolist() == pytest.approx([1.0, 0.2 * math.sqrt(0.9) / 0.28, 0.3 * math.sqrt(0.72) / 0.496])
    assert tab.coef_xt.tolist() == pytest.approx([0.0, 0.1 * math.sqrt(0.8) / 0.28, 0.28 * math.sqrt(0.7) / 0.496])
    assert tab.log_beta.tolist() == pytest.approx([math.log(0.1), math.log(0.2), math.log(0.3)])


def test_table_lookups_reuse_one_copy_per_device():
    tab = PosteriorTable(BETAS)
    first = tab.on("coef_x0", torch.device("cpu"))
    assert tab.on("coef_x0", torch.device("cpu")) is first and torch.equal(first, tab.coef_x0)
    t = torch.tensor([2, 0])
    assert tab.gather("coef_x0", t, torch.zeros(2, 1, 1, 1)).flatten().tolist() == tab.coef_x0[t].tolist()


def test_normal_kl_by_hand():
    z = torch.zeros(1)
    assert float(normal_kl(z, z, z + 1, z)) == pytest.approx(0.5)
    assert float(normal_kl(z, z, z, z + math.log(2))) == pytest.approx(0.5 * (-1 + math.log(2) + 0.5))
    assert float(normal_kl(z + 0.3, z - 0.2, z + 0.3, z - 0.2)) == pytest.approx(0.0, abs=1e-7)


def test_discretized_gaussian_nll_by_hand():
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    x, m, s = torch.tensor([0.0]), torch.tensor([0.1]), torch.tensor([math.log(0.5)])
    inner = phi((0 - 0.1 + 1 / 255) / 0.5) - phi((0 - 0.1 - 1 / 255) / 0.5)
    assert float(discretized_gaussian_nll(x, m, s, cdf="exact")) == pytest.approx(-math.log(inner), rel=1e-5)
    # the edge bins extend to infinity
    top = 1 - phi((1 - 0.1 - 1 / 255) / 0.5)
    assert float(discretized_gaussian_nll(torch.tensor([1.0]), m, s, cdf="exact")) == pytest.approx(
        -math.log(top), rel=1e-5
    )
    bottom = phi((-1 - 0.1 + 1 / 255) / 0.5)
    assert float(discretized_gaussian_nll(torch.tensor([-1.0]), m, s, cdf="exact")) == pytest.approx(
        -math.log(bottom), rel=1e-5
    )


def _px(v: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), float(v))


def test_vb_term_kl_by_hand():
    """t = 1, one pixel: x₀ = 0.5, ε = 1, model ε̂ = 0.8, variance output v = 0 (f = 0.5: geometric mean of β, β̃)."""
    tab = PosteriorTable(BETAS)
    ab, x0, eps, eps_hat = 0.72, 0.5, 1.0, 0.8
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    x0_hat = (x_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
    c0, ct = 0.2 * math.sqrt(0.9) / 0.28, 0.1 * math.sqrt(0.8) / 0.28
    mu, mu_hat = c0 * x0 + ct * x_t, c0 * x0_hat + ct * x_t
    lv_true = math.log(0.2 * 0.1 / 0.28)
    lv_model = 0.5 * math.log(0.2) + 0.5 * lv_true
    kl = 0.5 * (-1 + lv_model - lv_true + math.exp(lv_true - lv_model) + (mu - mu_hat) ** 2 * math.exp(-lv_model))
    got = vb_term(tab, _px(x0), _px(x_t), torch.tensor([1]), _px(eps_hat), _px(0.0), cdf="approx")
    assert float(got) == pytest.approx(kl / math.log(2), rel=1e-5)


def test_vb_term_is_the_decoder_nll_at_t0():
    tab = PosteriorTable(BETAS)
    x0, eps, eps_hat = 0.2, -0.5, -0.4
    x_t = math.sqrt(0.9) * x0 + math.sqrt(0.1) * eps
    x0_hat = (x_t - math.sqrt(0.1) * eps_hat) / math.sqrt(0.9)  # coef_x0 = 1, coef_xt = 0 at t = 0
    log_var = math.log(0.1)  # v = 1: f = 1, log σ² = log β_0
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    sd = math.exp(0.5 * log_var)
    p = phi((x0 - x0_hat + 1 / 255) / sd) - phi((x0 - x0_hat - 1 / 255) / sd)
    got = vb_term(tab, _px(x0), _px(x_t), torch.tensor([0]), _px(eps_hat), _px(1.0), cdf="exact")
    assert float(got) == pytest.approx(-math.log(p) / math.log(2), rel=1e-4)


class StubPrior(torch.nn.Module):
    """One pixel, one channel: ε̂(x) = a·x, variance output v; records the inputs of each call."""

    def __init__(self, a: float, v: float, learned: bool, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))
        self.v, self.learned_variance, self.in_channels = v, learned, 1
        self.alphas_cumprod = alphas_cumprod
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward_raw(self, x, t):
        self.calls.append((x.detach().clone(), t.clone()))
        eps = self.a * x
        return torch.cat([eps, torch.full_like(x, self.v)], 1) if self.learned_variance else eps

    def predict_eps(self, x, t):
        return self.forward_raw(x, t)[:, :1]


@pytest.mark.parametrize("batching", ["joint", "separate"])
@pytest.mark.parametrize("learned", [True, False])
def test_each_term_by_hand_on_a_stub(learned, batching):
    tab = PosteriorTable(BETAS)
    student = StubPrior(0.5, 0.0, learned, tab.alphas_cumprod)
    teacher = StubPrior(0.25, 0.0, learned, tab.alphas_cumprod)
    cfg = loss_config(
        lambda_distill=0.1, gamma_distill=3.0, lambda_aux=0.3, gamma_aux=2.0, k=1.0, student_batching=batching
    )
    x0, eps, t = _px(0.5), _px(1.0), torch.tensor([1])
    ab = 0.72
    x_t = math.sqrt(ab) * 0.5 + math.sqrt(1 - ab) * 1.0
    simple = (1.0 - 0.5 * x_t) ** 2
    distill = (0.25 * x_t - 0.5 * x_t) ** 2
    aux = (0.25 * 1.0 - 0.5 * 1.0) ** 2  # the auxiliary input is ε itself
    w_d, w_a = (1 - ab) ** 3, (1 - ab) ** 2  # p2 with k = 1: 1/(1 + SNR)^γ = (1 − ᾱ)^γ
    terms = sdft_loss(student, teacher, x0, eps, t, cfg, tab)
    assert float(terms.simple.detach()) == pytest.approx(simple)
    assert float(terms.distill.detach()) == pytest.approx(distill)
    assert float(terms.aux.detach()) == pytest.approx(aux)
    assert float(terms.w_distill) == pytest.approx(w_d) and float(terms.w_aux) == pytest.approx(w_a)
    vb = float(vb_term(tab, x0, _px(x_t), t, _px(0.5 * x_t), _px(0.0), cdf="approx")) if learned else 0.0
    assert float(terms.vb.detach()) == pytest.approx(vb)
    assert float(terms.total.detach()) == pytest.approx(simple + vb + 0.1 * w_d * distill + 0.3 * w_a * aux, rel=1e-6)
    # joint: one batched call each, the student sees [x_t; ε], the teacher the same, at the same t twice;
    # separate: two calls each, x_t then ε
    for calls in (student.calls, teacher.calls):
        if batching == "joint":
            assert len(calls) == 1
            x_in, t_in = calls[0]
            assert x_in.flatten().tolist() == pytest.approx([x_t, 1.0]) and t_in.tolist() == [1, 1]
        else:
            assert [x.flatten().tolist() for x, _ in calls] == [pytest.approx([x_t]), pytest.approx([1.0])]
            assert [t_in.tolist() for _, t_in in calls] == [[1], [1]]
    # the gradient reaches the student, L_vb's mean is stopped (learned σ: v is constant here, so vb adds none)
    terms.total.backward()
    d_simple = 2 * (0.5 * x_t - 1.0) * x_t
    d_distill = 2 * (0.5 * x_t - 0.25 * x_t) * x_t * 0.1 * w_d
    d_aux = 2 * (0.5 - 0.25) * 1.0 * 0.3 * w_a
    assert float(student.a.grad) == pytest.approx(d_simple + d_distill + d_aux, rel=1e-5)
    assert teacher.a.grad is None


def test_min_snr_and_constant_weightings():
    tab = PosteriorTable(BETAS)
    student = StubPrior(0.5, 0.0, False, tab.alphas_cumprod)
    teacher = StubPrior(0.25, 0.0, False, tab.alphas_cumprod)
    cfg = loss_config(weighting_distill="min_snr", gamma_distill=2.0, weighting_aux="constant", gamma_aux=50.0)
    t = torch.tensor([0, 2])
    terms = sdft_loss(student, teacher, torch.zeros(2, 1, 1, 1), torch.ones(2, 1, 1, 1), t, cfg, tab)
    snr = [0.9 / 0.1, 0.504 / 0.496]  # min(SNR, 2) / SNR: clipped at t = 0, not at t = 2
    assert terms.w_distill.tolist() == pytest.approx([2 / snr[0], 1.0], rel=1e-5)
    assert terms.w_aux.tolist() == [1.0, 1.0]


def _tiny(learned: bool, seed: int):
    return tiny_unet_prior(image_size=16, learned_variance=learned, seed=seed, trainable=True)


@pytest.mark.parametrize("learned", [True, False])
def test_terms_on_tiny_unets(learned):
    student, teacher = _tiny(learned, 0), _tiny(learned, 1)
    teacher.requires_grad_(False)
    tab = PosteriorTable.from_scheduler(student.scheduler)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([0, 700])
    cfg = loss_config(lambda_distill=0.1, gamma_distill=3.0, lambda_aux=0.3, gamma_aux=50.0)
    terms = sdft_loss(student, teacher, x0, eps, t, cfg, tab)
    ab = student.alphas_cumprod[t].view(2, 1, 1, 1)  # the prior's float32 ᾱ (the weights use it)
    # x_t from the float64-built √ᾱ_t, √(1−ᾱ_t) (guided-diffusion's q_sample)
    x_t = tab.sqrt_alphas_cumprod[t].view(2, 1, 1, 1) * x0 + tab.sqrt_one_minus_alphas_cumprod[t].view(2, 1, 1, 1) * eps
    with torch.no_grad():
        raw = student.forward_raw(x_t, t)
        e_s, e_s_aux = raw[:, :3], student.predict_eps(eps, t)
        e_t, e_t_aux = teacher.predict_eps(x_t, t), teacher.predict_eps(eps, t)
    assert torch.allclose(terms.simple, ((eps - e_s) ** 2).mean((1, 2, 3)), atol=1e-5)
    assert torch.allclose(terms.distill, ((e_t - e_s) ** 2).mean((1, 2, 3)), atol=1e-5)
    assert torch.allclose(terms.aux, ((e_t_aux - e_s_aux) ** 2).mean((1, 2, 3)), atol=1e-5)
    w = (1 - ab.flatten()) ** torch.tensor(3.0), (1 - ab.flatten()) ** torch.tensor(50.0)
    assert torch.allclose(terms.w_distill, w[0]) and torch.allclose(terms.w_aux, w[1])
    if learned:
        assert torch.allclose(terms.vb, vb_term(tab, x0, x_t, t, e_s, raw[:, 3:], cdf="approx"), atol=1e-5)
        assert (terms.vb > 0).all()
    else:
        assert torch.equal(terms.vb, torch.zeros(2))
    total = terms.simple + terms.vb + 0.1 * w[0] * terms.distill + 0.3 * w[1] * terms.aux
    assert float(terms.total) == pytest.approx(float(total.mean()), rel=1e-5)


@pytest.mark.parametrize("learned", [True, False])
def test_joint_and_separate_batching_give_the_same_loss_and_gradients(learned):
    """``student_batching``: one call on [x_t; ε] or two calls with one backward is the same math — every term and
    every parameter gradient agree to float rounding on tiny U-Nets (no dropout: the masks would differ)."""
    teacher = _tiny(learned, 1).requires_grad_(False)
    tab = PosteriorTable.from_scheduler(teacher.scheduler)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1, torch.randn(3, 3, 16, 16, generator=g)
    t = torch.tensor([0, 400, 999])
    results = {}
    for mode in ("joint", "separate"):
        student = _tiny(learned, 0)
        cfg = loss_config(lambda_distill=0.1, gamma_distill=3.0, lambda_aux=0.3, gamma_aux=2.0, student_batching=mode)
        terms = sdft_loss(student, teacher, x0, eps, t, cfg, tab)
        terms.total.backward()
        grads = {n: p.grad.clone() for n, p in student.unet.named_parameters()}
        results[mode] = (terms, grads)
    (a, ga), (b, gb) = results["joint"], results["separate"]
    for name in ("total", "simple", "vb", "distill", "aux"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-7), name
    assert (a.distill > 0).all() and (a.aux > 0).all()
    assert ga.keys() == gb.keys() and len(ga) > 10
    for n in ga:
        assert torch.allclose(ga[n], gb[n], rtol=1e-5, atol=1e-6), n
    scale = max(float(v.abs().max()) for v in ga.values())
    assert max(float((ga[n] - gb[n]).abs().max()) for n in ga) <= 1e-6 * max(scale, 1.0)
    assert loss_config().student_batching == "joint"  # the default
    with pytest.raises(Exception, match="student_batching"):
        loss_config(student_batching="auto")


@pytest.mark.parametrize("learned", [True, False])
def test_without_distillation_it_is_the_naive_loss_and_needs_no_teacher(learned):
    student = _tiny(learned, 0)
    tab = PosteriorTable.from_scheduler(student.scheduler)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([3, 500])
    terms = sdft_loss(student, None, x0, eps, t, loss_config(lambda_distill=0.0, lambda_aux=0.0), tab)
    # x_t from the float64-built √ᾱ_t, √(1−ᾱ_t) (guided-diffusion's q_sample)
    x_t = tab.sqrt_alphas_cumprod[t].view(2, 1, 1, 1) * x0 + tab.sqrt_one_minus_alphas_cumprod[t].view(2, 1, 1, 1) * eps
    with torch.no_grad():
        raw = student.forward_raw(x_t, t)
    naive = ((eps - raw[:, :3]) ** 2).mean((1, 2, 3))
    if learned:
        naive = naive + vb_term(tab, x0, x_t, t, raw[:, :3], raw[:, 3:], cdf="approx")
    assert float(terms.total) == pytest.approx(float(naive.mean()), rel=1e-5)


def test_the_teacher_runs_outside_the_students_autocast():
    """Under bf16-mixed training the fp16 teacher must not be recast to bf16 by autocast."""
    tab = PosteriorTable(BETAS)
    seen = []

    class Teacher(StubPrior):
        def forward_raw(self, x, t):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().forward_raw(x, t)

    student = StubPrior(0.5, 0.0, False, tab.alphas_cumprod)
    teacher = Teacher(0.25, 0.0, False, tab.alphas_cumprod)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sdft_loss(student, teacher, _px(0.5), _px(1.0), torch.tensor([1]), loss_config(), tab)
    assert seen == [False]


def test_vb_trains_only_the_variance_channels():
    """L_vb with the mean stopped: its gradient reaches the variance output (matching a central finite difference of
    the KL) and never the ε output."""
    tab = PosteriorTable(BETAS)

    class VarStub(StubPrior):
        def __init__(self) -> None:
            super().__init__(0.5, 0.0, True, tab.alphas_cumprod)
            self.v_param = torch.nn.Parameter(torch.tensor(0.3))

        def forward_raw(self, x, t):
            return torch.cat([self.a * x, self.v_param.expand_as(x)], 1)

    student = VarStub()
    cfg = loss_config(lambda_distill=0.0, lambda_aux=0.0, simple=0.0)
    x0, eps, t = _px(0.5), _px(1.0), torch.tensor([1])
    terms = sdft_loss(student, None, x0, eps, t, cfg, tab)
    terms.total.backward()
    assert float(student.a.grad) == 0.0  # the ε channel gets nothing from L_vb
    ab = float(tab.alphas_cumprod[1])
    x_t = _px(math.sqrt(ab) * 0.5 + math.sqrt(1 - ab) * 1.0)
    eps_hat = 0.5 * x_t

    def vb_at(v: float) -> float:
        return float(vb_term(tab, x0, x_t, t, eps_hat, _px(v), cdf="approx"))

    h = 1e-3
    assert float(student.v_param.grad) == pytest.approx((vb_at(0.3 + h) - vb_at(0.3 - h)) / (2 * h), rel=1e-3)
    assert float(student.v_param.grad) != 0.0
