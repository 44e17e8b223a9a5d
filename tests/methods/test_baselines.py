"""The text-guided baselines (``method=sdedit``, ``method=ddib``) on the tiny Stable Diffusion: stages end to end,
the number of denoising steps each runs, determinism, and start-up checks."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.run import build_method, run
from diffedit_lab.utils.errors import UserError
from tests.helpers import tiny_overrides


@pytest.fixture
def compose_m(tmp_path, cache_dir):
    from diffedit_lab.utils.config import compose_config
    from tests.helpers import CONF

    def _compose(method: str, *overrides: str):
        base = tiny_overrides(tmp_path / "run", cache_dir, method=method)
        return compose_config([*base, *overrides], config_dir=CONF)

    return _compose


@pytest.mark.parametrize("method", ["sdedit", "ddib"])
def test_edit_and_eval_end_to_end(method, compose_m, tmp_path):
    result = run(compose_m(method))
    out = tmp_path / "run"
    assert sorted(p.stem for p in (out / "edit" / "edited").glob("*.png")) == ["astronaut", "camera", "chelsea"]
    assert (out / "edit" / "grid.png").is_file()
    m = result.metrics
    assert m["edit/num_images"] == 3 and m["eval/num_images"] == 3
    for key in ("edit/latency_ms_per_image", "eval/clip_dir", "eval/identity", "eval/fid", "eval/psnr"):
        assert key in m and m[key] == m[key], key  # present and not NaN


def _count_unet_calls(module, monkeypatch) -> dict:
    prior = module.teacher
    calls = {"n": 0}
    original = prior.predict_eps

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(prior, "predict_eps", counting)
    return calls


@pytest.mark.parametrize(("strength", "expected"), [(0.5, 5), (0.2, 2), (1.0, 10)])
def test_sdedit_runs_strength_times_the_schedule(strength, expected, compose_m, monkeypatch):
    module = build_method(compose_m("sdedit", "method.num_steps=10", f"method.strength={strength}").method)
    calls = _count_unet_calls(module, monkeypatch)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = module.edit_images(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and calls["n"] == expected  # round(α·N) guided steps (cond+uncond batched)
    again = module.edit_images(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)  # the seed fixes the noise


def test_ddib_inverts_then_regenerates_deterministically(compose_m, monkeypatch):
    module = build_method(compose_m("ddib", "method.num_steps=4").method)
    calls = _count_unet_calls(module, monkeypatch)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = module.edit_images(images, torch.Generator().manual_seed(0))
    assert calls["n"] == 8  # 4 inversion + 4 sampling steps
    other = module.edit_images(images, torch.Generator().manual_seed(123))
    torch.testing.assert_close(out, other)  # no noise is drawn: the seed does not matter


def test_ddib_inverts_with_the_source_text_and_samples_with_the_target(compose_m, monkeypatch):
    module = build_method(
        compose_m("ddib", "method.num_steps=3", "method.inversion_guidance=1", "method.guidance_scale=4").method
    )
    prior = module.teacher
    seen = []
    original = prior.predict_eps

    def recording(x, t, cond=None, uncond=None, guidance_scale=1.0, **kw):
        seen.append((cond[0].clone(), guidance_scale))
        return original(x, t, cond=cond, uncond=uncond, guidance_scale=guidance_scale, **kw)

    monkeypatch.setattr(prior, "predict_eps", recording)
    module.edit_images(torch.rand(1, 3, 32, 32) * 2 - 1, torch.Generator().manual_seed(0))
    src = module.text_embeddings(module.cfg.prompt.source_text, 1)[0]
    tgt = module.text_embeddings(module.cfg.prompt.text, 1)[0]
    assert not torch.equal(src, tgt)
    assert [g for _, g in seen] == [1.0] * 3 + [4.0] * 3
    assert all(torch.equal(c, src) for c, _ in seen[:3]) and all(torch.equal(c, tgt) for c, _ in seen[3:])


@pytest.mark.parametrize(
    ("method", "override", "match"),
    [
        ("sdedit", "method.strength=0", "method.strength"),
        ("sdedit", "method.strength=1.5", "method.strength"),
        ("sdedit", "method.num_steps=0", "method.num_steps"),
        ("ddib", "prompt.source_text=''", "source_text"),
        ("ddib", "method.latent=median", "method.latent"),
    ],
)
def test_bad_values_stop_at_start(method, override, match, compose_m):
    with pytest.raises(UserError, match=match):
        run(compose_m(method, override))


def test_latent_codes_are_refused_with_a_clear_line(compose_m):
    with pytest.raises(UserError, match=r"method=sdedit \(edit\) needs images: data=LatentCodesDataModule"):
        run(compose_m("sdedit", "data=latents", "~data.max_images", "~data.resolution", "stage=edit"))
