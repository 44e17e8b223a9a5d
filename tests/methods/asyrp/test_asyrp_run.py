"""Asyrp through the runner on tiny models: every stage end to end, bit-exact resume, edit from the exported module
alone, a prior given as a diffusers folder (SDFT's ``ema_unet``) or as an object, presets and one-line errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from diffedit_lab.methods.asyrp import AsyrpModule
from diffedit_lab.methods.stage import run_stages
from diffedit_lab.run import run
from diffedit_lab.utils.artifacts import load_artifact
from diffedit_lab.utils.config import compose_config
from diffedit_lab.utils.errors import UserError
from tests.helpers import cli_in_process, tiny_overrides


def _cfg(out, cache, *overrides: str):
    return compose_config([*tiny_overrides(out, cache, method="asyrp"), *overrides])


def test_every_stage_end_to_end(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = run(_cfg(out, cache_dir))
    module = result.objects["method"]
    assert [s.name for s in result.objects["stages"]] == ["fit", "edit", "eval"]
    ckpt = torch.load(out / "checkpoints" / "fit" / "last.ckpt", weights_only=True)
    # 2 epochs × 2 trajectories × 2 timesteps of [999, 500] on the 4-step grid, one optimiser step each
    assert ckpt["global_step"] == 8 and ckpt["diffedit_stage"] == "fit"
    assert sorted(p.name for p in (out / "checkpoints" / "fit").glob("step_*.ckpt"))[:2] == [
        "step_000002.ckpt", "step_000004.ckpt"]  # fmt: skip
    assert ckpt["state_dict"] and all(k.startswith("delta.") for k in ckpt["state_dict"])  # the prior is not saved
    assert ckpt["state_dict"]["delta.conv_out.weight"].abs().sum() > 0  # trained away from Δh = 0
    assert all(p.grad is None and not p.requires_grad for p in module.prior.unet.parameters())
    exported = load_artifact(out / "asyrp.safetensors", "asyrp")
    assert exported.config["t_edit"] == 500 and exported.config["prompt"] == "smiling face"
    assert set(exported.state) == set(ckpt["state_dict"])  # the same tensors as the checkpoint
    for key in ("source", "edited", "reconstruction"):
        assert len(list((out / "edit" / key).glob("*.png"))) == 2, key
    assert (out / "edit" / "grid.png").is_file() and list((out / "images" / "fit").glob("before_after_*.png"))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train/loss", "train/clip", "train/recon", "edit/clip_dir", "edit/identity", "edit/psnr",
                "edit/latency_ms_per_image", "eval/clip_dir", "eval/identity", "eval/num_images"):  # fmt: skip
        assert key in metrics, key
    assert metrics["edit/clip_dir"] == pytest.approx(metrics["eval/clip_dir"])  # same images, same edit
    # the trained edit differs from the reconstruction, which is the plain DDIM round trip
    src = (out / "edit" / "edited").glob("*.png")
    assert any(p.read_bytes() != (out / "edit" / "reconstruction" / p.name).read_bytes() for p in src)


def test_resume_is_bit_exact_mid_epoch_with_the_lr_schedule(tmp_path, cache_dir):
    full, parts = tmp_path / "full", tmp_path / "parts"
    base = ("stage=fit", "method.fit.epochs=3", "method.fit.lr_step_epochs=1", "+method.optim.momentum=0.9")
    run(_cfg(full, cache_dir, *base))
    run(_cfg(parts, cache_dir, *base, "trainer.max_steps=6"))  # stops after the first trajectory of epoch 1
    assert torch.load(parts / "checkpoints/fit/last.ckpt", weights_only=True)["global_step"] == 6
    run(_cfg(parts, cache_dir, *base, "ckpt_path=last"))
    a = torch.load(full / "checkpoints/fit/last.ckpt", weights_only=False)
    b = torch.load(parts / "checkpoints/fit/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 12
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.1**2)


def test_edit_alone_from_the_exported_module(tmp_path, cache_dir):
    out = tmp_path / "run"
    run(_cfg(out, cache_dir, "stage=[fit,edit]", "method.fit.epochs=1"))
    first = {p.name: p.read_bytes() for p in (out / "edit" / "edited").glob("*.png")}
    other = tmp_path / "other"
    run(_cfg(other, cache_dir, "stage=edit", f"method.weights={out}/asyrp.safetensors"))
    assert {p.name: p.read_bytes() for p in (other / "edit" / "edited").glob("*.png")} == first  # seeded boosting
    run(_cfg(out, cache_dir, "stage=eval"))  # the run dir's own asyrp.safetensors
    assert "eval/clip_dir" in json.loads((out / "metrics.json").read_text())
    with pytest.raises(UserError, match="no trained Asyrp h-space module"):
        run(_cfg(tmp_path / "empty", cache_dir, "stage=edit"))


def test_a_prior_folder_like_sdfts_ema_unet(tmp_path, cache_dir):
    """``prior.source=<sdft run>/ema_unet``: SDFT exports its EMA with UnconditionalPrior.save_pretrained."""
    from diffedit_lab.testing.priors import tiny_unet_prior

    folder = tmp_path / "sdft_run" / "ema_unet"
    tiny_unet_prior(image_size=32, learned_variance=True, seed=7).save_pretrained(folder)
    out = tmp_path / "run"
    result = run(_cfg(out, cache_dir, "prior=adm_ffhq", f"prior.source={folder}", "stage=[fit,edit]",
                      "method.fit.epochs=1"))  # fmt: skip
    prior = result.objects["method"].prior
    saved = tiny_unet_prior(image_size=32, learned_variance=True, seed=7)
    assert torch.equal(prior.unet.conv_in.weight, saved.unet.conv_in.weight)
    assert len(list((out / "edit" / "edited").glob("*.png"))) == 2
    code, err = cli_in_process(*tiny_overrides(tmp_path / "x", cache_dir, method="asyrp"), "prior=adm_ffhq",
                               f"prior.source={tmp_path}/no_such_run/ema_unet")  # fmt: skip
    assert code == 2 and err.strip().endswith("ema_unet: no such file or folder"), err


def test_with_a_prior_object_on_a_sub_context(tmp_path, cache_dir):
    """The API another method (SDFT's edit stage) uses: its own prior object, outputs in a subfolder."""
    from diffedit_lab.testing.priors import tiny_unet_prior

    out = tmp_path / "host"
    host = run(_cfg(out, cache_dir, "stage=fit", "method.fit.epochs=1"))
    prior = tiny_unet_prior(image_size=32, learned_variance=True, seed=5)
    node = _cfg(out, cache_dir).method
    asyrp = AsyrpModule.with_prior(node, prior)
    ctx = host.objects["context"]
    sub = dataclasses.replace(ctx, run_dir=ctx.run_dir / "asyrp", metrics={})
    results = run_stages(asyrp, asyrp.STAGES[:2], sub)
    assert asyrp.prior is prior and set(results) == {"fit", "edit"} and sub.metrics["time/fit_s"] > 0
    assert (sub.run_dir / "asyrp.safetensors").is_file() and (
        sub.run_dir / "checkpoints" / "fit" / "last.ckpt"
    ).is_file()
    assert len(list((sub.run_dir / "edit" / "edited").glob("*.png"))) == 2 and "edit/clip_dir" in sub.metrics


@pytest.mark.parametrize(
    ("override", "mention"),
    [
        ("method.schedule.t_edit=2000", "method.schedule.t_edit=2000: expected a value <= t_0=999"),
        ("method.schedule.t_boost=600", "method.schedule.t_boost=600"),
        ("method.loss.clip_form=bogus", "method.loss.clip_form='bogus': expected one of ['log', 'linear']"),
        ("method.fit.batch_size=3", "method.fit.batch_size=3: expected at most num_images=2"),
        ("method.edit.steps=1", "method.edit.steps=1"),
        ("method.eval.metrics=[clip_dir,bogus]", "bogus"),
        ("prompt.source_text=", "method.prompt.source_text"),
        ("stage=sample", "stage=sample: method 'asyrp' has no stage 'sample'"),
    ],
)
def test_bad_option_is_one_line(override, mention, tmp_path, cache_dir):
    code, err = cli_in_process(*tiny_overrides(tmp_path / "run", cache_dir, method="asyrp"), override)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert mention in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_settings_the_prior_or_trainer_cannot_take_are_one_line(tmp_path, cache_dir):
    with pytest.raises(UserError, match=r"method.schedule.t_0=1200: expected < 1000"):
        run(_cfg(tmp_path / "run", cache_dir, "method.schedule.t_0=1200", "method.schedule.t_edit=500"))
    with pytest.raises(UserError, match=r"trainer.accumulate_grad_batches=2: Asyrp steps its optimiser itself"):
        run(_cfg(tmp_path / "run2", cache_dir, "stage=fit", "trainer.accumulate_grad_batches=2"))


def test_presets_compose(tmp_path):
    epochs = {"smiling": 5, "young": 5, "sad": 3, "angry": 3, "old": 3}
    for prompt, n in epochs.items():
        m = compose_config(["method=asyrp", f"prompt={prompt}", f"paths.output_dir={tmp_path}"]).method
        assert m.fit.epochs == n and m.prompt.name == prompt, prompt
        assert (m.fit.num_images, m.fit.train_steps, m.invert.steps, m.schedule.t_edit) == (100, 50, 100, 500)
    m = compose_config(["method=asyrp", "prompt=old", "method.fit.epochs=4", f"paths.output_dir={tmp_path}"]).method
    assert m.fit.epochs == 4 and m.optim.lr == 0.5 and m.loss.recon == 3.0
    for name, data, n in (("asyrp_metfaces", "metfaces", 500), ("asyrp_aahq", "aahq", 400)):
        cfg = compose_config([f"experiment={name}", "prompt=sad", f"paths.output_dir={tmp_path}"])
        assert cfg.method.eval.max_images == n and cfg.data.root.endswith(data) and cfg.data.split_mode == "ratio"
        assert cfg.method.prior.source.endswith("adm-ffhq-256") and cfg.method.fit.epochs == 3
