"""SDFTModule on the tiny prior, without a Trainer: config checks, the EMA formula, the teacher stays frozen and
out of the state dict, random init, DDIM η = 0 determinism, SDEdit's start step."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.diffusion import samplers
from diffedit_lab.methods.sdft import SDFTModule
from diffedit_lab.methods.sdft.ema import make_ema
from diffedit_lab.methods.sdft.inference import _generate
from diffedit_lab.utils.errors import UserError


@pytest.fixture
def method_cfg(compose):
    from tests.helpers import tiny_overrides

    def _cfg(*overrides: str):
        import tempfile
        from pathlib import Path

        from diffedit_lab.utils.config import compose_config

        tmp = Path(tempfile.mkdtemp())
        return compose_config([*tiny_overrides(tmp / "run", tmp / "cache", method="sdft"), *overrides]).method

    return _cfg


@pytest.fixture
def module(method_cfg):
    m = SDFTModule.from_config(method_cfg())
    m.build_networks()
    return m


def test_config_errors_are_one_line(method_cfg):
    cases = {
        "method.loss.weighting_aux=p3": "method.loss.weighting_aux='p3'",
        "method.loss.lambda_distill=-1": "method.loss.lambda_distill=-1.0: expected a value >= 0",
        "method.ema.decay=1.5": "method.ema.decay=1.5",
        "method.init=pretrained": "method.init='pretrained'",
        "method.translate.strength=0": "method.translate.strength=0.0",
        "method.eval.pair_metrics=[fid]": "method.eval.pair_metrics",
        "method.teacher_dtype=fp8": "method.teacher_dtype='fp8'",
        "method.edit.prompts=[grumpy]": "'grumpy' is not a prompt preset",
        "method.edit.method=asyrpp": "method.edit.method='asyrpp': expected a method config",
        "method.fit.fid_monitor=lpips": "method.fit.fid_monitor='lpips'",
        "method.fit.fid_metrics=[fid]": "",  # valid: monitor fid is among the metrics
        "method.fit.fid_metrics=[kid]": "method.fit.fid_metrics=['kid']: expected a subset",
        "method.eval.translation_methods=[ddib]": "method.eval.translation_methods",
    }
    for override, message in cases.items():
        if not message:
            SDFTModule.from_config(method_cfg(override))
            continue
        with pytest.raises(UserError) as err:
            SDFTModule.from_config(method_cfg(override))
        assert message in str(err.value) and "\n" not in str(err.value), override


def test_ema_update_follows_the_formula():
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema = make_ema(model, decay=0.9)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, before[k])  # starts at the source weights
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.mul_(-2.0)
    ema.update_parameters(model)
    after = model.state_dict()
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * after[k], atol=1e-7), k
    assert int(ema.n_averaged) == 2 and not any(p.requires_grad for p in ema.parameters())


def test_student_starts_at_the_source_teacher_frozen_and_out_of_the_state_dict(module):
    teacher = module.teacher
    assert teacher.dtype == torch.float32  # auto on CPU
    source = {k: v.clone() for k, v in teacher.unet.state_dict().items()}
    for k, v in module.student.unet.state_dict().items():
        assert torch.equal(v, source[k])
    assert all(k.startswith(("student.", "ema.")) for k in module.state_dict())
    opt = module.configure_optimizers()
    assert opt.defaults["lr"] == pytest.approx(1e-3) and opt.defaults["weight_decay"] == 0.0
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    for _ in range(2):
        t, eps = module.draw_noise(x0)
        from diffedit_lab.methods.sdft.losses import sdft_loss

        loss = sdft_loss(module.student, teacher, x0, eps, t, module.cfg.loss, module._table).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.unet.state_dict().items():
        assert torch.equal(v, source[k]), k
    changed = [k for k, v in module.student.unet.state_dict().items() if not torch.equal(v, source[k])]
    assert changed


def test_random_init_differs_from_the_source(method_cfg):
    m = SDFTModule.from_config(
        method_cfg("method.init=random", "method.loss.lambda_distill=0", "method.loss.lambda_aux=0")
    )
    m.build_networks()
    src = m.teacher.unet.state_dict()
    student = m.student.unet.state_dict()
    assert any(not torch.equal(v, src[k]) for k, v in student.items() if v.is_floating_point())
    assert student.keys() == src.keys()


def test_ddim_eta0_is_deterministic_and_independent_of_batching(module):
    s = module.cfg.sample
    prior = module.sampling_prior(ema=True)
    a = _generate(module, prior, [5, 6], s)
    b = _generate(module, prior, [5, 6], s)
    c = _generate(module, prior, [6], s)
    assert torch.equal(a, b)
    assert torch.allclose(a[1:], c, atol=1e-4)  # only float rounding of batched convolutions differs
    assert not torch.allclose(a[0], a[1])


def test_sdedit_starts_in_the_middle_of_the_schedule(module):
    prior = module.sampling_prior(ema=True)
    seen: list[int] = []
    x0 = torch.zeros(1, 3, 32, 32)
    samplers.sdedit(prior, x0, strength=0.5, num_steps=40, step_callback=lambda i, t, x: seen.append(int(t)))
    # 40 DDIM steps over T = 1000: timesteps 975, 950, …, 0; the middle one is index 20 → t = 475
    assert len(seen) == 20 and seen[0] == 475 and seen[-1] == 0
