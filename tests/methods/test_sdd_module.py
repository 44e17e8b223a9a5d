"""SDDModule built from the REAL Hydra config (method=sdd/tiny: tiny StyleGAN2, tiny Stable Diffusion, tiny
ArcFace): what each loss term sees and where its gradient goes, plus the config/data checks of the module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.run import build_method
from diffedit_lab.utils.config import compose_config
from diffedit_lab.utils.errors import UserError

LAMBDA_L2 = 5000.0  # distinctive values, so the test shows the weights come from the prompt preset
LAMBDA_ID = 2.0


def _compose(out_dir: Path, *overrides: str):
    return compose_config(
        [
            "method=sdd/tiny",
            "logger=none",
            "callbacks=none",
            f"paths.output_dir={out_dir}",
            f"paths.cache_dir={out_dir / 'cache'}",
            *overrides,
        ]
    )


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdd_module")


@pytest.fixture(scope="module")
def step(out_dir):
    """One training step at fixed t=500 on seeds [3, 4], recording the identity and SDS calls."""
    cfg = _compose(out_dir, f"method.loss.latent_l2={LAMBDA_L2}", f"method.loss.identity={LAMBDA_ID}")
    module = build_method(cfg.method)
    assert module.cfg.loss.latent_l2 == LAMBDA_L2 and module.cfg.loss.identity == LAMBDA_ID
    module.selection = sel.select("fixed_500")
    torch.manual_seed(0)
    with torch.no_grad():  # make M(w) clearly non-zero (biases start at 0); ×lr_mul 0.01 → biases ~0.5
        for name, p in module.mapper.named_parameters():
            if name.endswith("bias"):
                p.add_(50.0 * torch.randn_like(p))

    calls: dict = {}
    encoder, sds = module.identity, module.sds
    assert encoder is not None, "demo config: the tiny ArcFace must be on"
    id_loss, sds_forward = encoder.loss, sds.forward

    def recording_id_loss(a, b):
        out = id_loss(a, b)
        calls["id"] = (a, b, out)
        return out

    def recording_sds(*args, **kwargs):
        out = sds_forward(*args, **kwargs)
        calls["sds"] = (args, out)
        return out

    encoder.loss = recording_id_loss
    sds.forward = recording_sds
    module.log_dict = lambda logs, **_: calls.__setitem__("logs", logs)
    batch = {"seed": torch.tensor([3, 4]), "index": torch.tensor([0, 1])}
    loss = module.training_step(batch, 0)
    w = module.codes_from_batch(batch)
    return module, calls, loss, w


def test_identity_loss_compares_original_with_edited_image(step):
    module, calls, _, w = step
    assert w.shape == (2, 8, 32)
    delta = module.mapper(w)
    assert delta[:, 4:8].abs().amax() > 1e-2, "the mapper must be non-trivial for this test to mean anything"
    first, second, loss_id = calls["id"]
    with torch.no_grad():
        original = module.synthesize(w)
        edited = module.synthesize(module.mapper.edit(w))
    assert not first.requires_grad, "the original image is a constant target"
    assert second.requires_grad, "the edited image carries the mapper's graph"
    torch.testing.assert_close(first, original)
    torch.testing.assert_close(second, edited)
    assert not torch.allclose(first, second), "original and edited images must differ (M(w) != 0)"
    assert float(loss_id.detach()) > 0, (
        "1 - cos between different images; 0 would mean it compared an image with itself"
    )


def _grads(loss: torch.Tensor, module) -> dict[str, torch.Tensor]:
    names, params = zip(*module.mapper.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return dict(zip(names, grads, strict=True))


def test_identity_term_alone_trains_the_mapper(step):
    module, calls, _, _ = step
    grads = _grads(calls["id"][2], module)
    assert set(grads) and all(name.startswith("mappers.medium.") for name in grads), "angry edits medium only"
    for name, g in grads.items():
        assert g is not None and g.abs().sum() > 0, name


def test_sds_term_reaches_the_mapper_through_the_edited_image(step):
    module, calls, _, _ = step
    (images, t, prompt, *_), out = calls["sds"]
    assert images is calls["id"][1], "SDS scores the edited image G(w')"
    assert t.tolist() == [500, 500] and prompt == "angry face"
    grads = _grads(out.loss, module)
    for name, g in grads.items():
        assert g is not None and g.abs().sum() > 0, name


def test_total_loss_and_latent_l2_term(step):
    module, calls, loss, w = step
    # w' − w = 0.1·M(w), so MSE(w, w') = 0.01·mean(M(w)²)
    with torch.no_grad():
        mse = 0.01 * module.mapper(w).double().pow(2).mean()
    logs = calls["logs"]
    assert float(logs["train/latent_l2"]) == pytest.approx(float(mse), rel=1e-5)
    sds_loss, id_loss = float(calls["sds"][1].loss.detach()), float(calls["id"][2].detach())
    l2_term = float(loss.detach()) - sds_loss - LAMBDA_ID * id_loss
    assert LAMBDA_L2 * float(mse) > 1.0, "the term must be visible next to the SDS loss"
    assert l2_term == pytest.approx(LAMBDA_L2 * float(mse), rel=1e-3)
    assert float(logs["train/loss"]) == pytest.approx(float(loss.detach()))
    assert float(logs["train/identity"]) == pytest.approx(id_loss) and float(logs["train/t"]) == 500


def test_training_step_without_selection_is_a_user_error(out_dir):
    module = build_method(_compose(out_dir).method)
    with pytest.raises(UserError, match="selection"):
        module.training_step({"seed": torch.tensor([0, 1])}, 0)


def test_codes_from_batch(step):
    module = step[0]
    for shape in [(2, 18, 512), (2, 8, 16), (2, 7, 32)]:
        with pytest.raises(UserError, match="W\\+ codes have shape"):
            module.codes_from_batch({"w": torch.zeros(*shape)})
    w = torch.randn(2, 8, 32, dtype=torch.float64)
    out = module.codes_from_batch({"w": w})
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, w.float(), rtol=0, atol=0)
    seeds = module.codes_from_batch({"seed": torch.tensor([5, 6])})
    assert seeds.shape == (2, 8, 32) and not seeds.requires_grad
    torch.testing.assert_close(seeds, module.codes_from_batch({"seed": [5, 6]}), rtol=0, atol=0)
    assert not torch.allclose(seeds[0], seeds[1])


def test_prompt_domain_must_match_the_generator(out_dir):
    cfg = _compose(out_dir, "prompt.domain=cat", "generator.domain=face")
    with pytest.raises(UserError, match="domain"):
        build_method(cfg.method)
    # the matching pair builds (so the error above is about the mismatch, not the override)
    ok = build_method(_compose(out_dir, "prompt.domain=face", "generator.domain=face").method)
    assert ok.cfg.prompt.domain == "face"


def test_empty_prompt_text_is_a_user_error(out_dir):
    with pytest.raises(UserError, match="prompt.text"):
        build_method(_compose(out_dir, "prompt.text=''").method)


def test_truncation_centre_is_computed_once(step, monkeypatch):
    module = step[0]
    gen = module.generator
    module._frozen.pop("w_avg", None)
    calls = {"n": 0}
    original = gen.mean_latent

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(gen, "mean_latent", counting)
    monkeypatch.setattr(gen, "latent_avg", None)
    first = module.codes_from_batch({"seed": [1, 2]})
    second = module.codes_from_batch({"seed": [1, 2]})
    assert calls["n"] == 1
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # psi = 0.7: w = w_avg + 0.7 (w_raw - w_avg)
    raw = gen.sample_wplus([1, 2], truncation=1.0)
    torch.testing.assert_close(first, module.w_avg + 0.7 * (raw - module.w_avg), rtol=1e-5, atol=1e-5)


def test_teacher_dtype_auto_follows_the_module_device(out_dir):
    cfg = _compose(out_dir, "prior=sd14")
    module = build_method(cfg.method)
    built = {}

    def fake_instantiate(c, device=None):
        built["dtype"], built["device"] = c.dtype, device
        return torch.nn.Linear(1, 1)

    import diffedit_lab.methods.base as base

    original = base.instantiate
    base.instantiate = fake_instantiate
    try:
        module.teacher  # noqa: B018 - property builds the component
    finally:
        base.instantiate = original
    # the builder is told the module's device, so `auto` resolves for it: no fp16 teacher on CPU, whatever CUDA
    # the node has
    assert built["dtype"] == "auto" and built["device"] == module.device == torch.device("cpu")
    from diffedit_lab.diffusion.priors import resolve_dtype

    assert resolve_dtype(built["dtype"], built["device"]) == torch.float32
