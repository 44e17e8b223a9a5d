"""SDFT through the runner on tiny models: every stage end to end, bit-exact resume (EMA and t/ε stream
included), inference from a finished run, and the offline command's missing-weights message."""

from __future__ import annotations

import json
import re

import pytest
import torch

from diffedit_lab.run import run
from diffedit_lab.utils.config import compose_config
from diffedit_lab.utils.errors import UserError
from tests.helpers import cli_in_process, tiny_overrides


def _cfg(out, cache, *overrides: str):
    return compose_config([*tiny_overrides(out, cache, method="sdft"), *overrides])


def test_every_stage_end_to_end(tmp_path, cache_dir):
    out = tmp_path / "run"
    stages = "stage=[fit,sample,train_classifier,translate,edit,eval]"
    result = run(_cfg(out, cache_dir, stages, "method.translate.method=egsde", "method.edit.paper_dataset=metfaces"))
    metrics = json.loads((out / "metrics.json").read_text())
    ckpt = torch.load(out / "checkpoints" / "fit" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["diffedit_stage"] == "fit"
    # only the student and its EMA are saved (the teacher is a component); the EMA saw 4 updates after its init
    assert all(k.startswith(("student.", "ema.")) for k in ckpt["state_dict"])
    assert int(ckpt["state_dict"]["ema.n_averaged"]) == 5
    state = ckpt["state_dict"]
    assert not torch.equal(state["ema.module.conv_in.weight"], state["student.unet.conv_in.weight"])
    assert {"train/loss", "train/simple", "train/vb", "train/distill", "train/aux"} <= metrics.keys()
    # FID/KID of EMA samples every 2 steps; best.ckpt holds the state of the step with the lowest FID
    monitor = result.objects["method"].quality_monitor
    assert [s for s, _ in monitor.history] == [2, 4]
    fids = {s: v["val/fid"] for s, v in monitor.history}
    best_step = min(fids, key=fids.get)
    assert metrics["val/fid_best"] == fids[best_step] and metrics["val/fid_best_step"] == best_step
    best = torch.load(out / "checkpoints" / "fit" / "best.ckpt", weights_only=True)
    assert best["global_step"] == best_step
    assert len(list((out / "sample").glob("0*.png"))) == 4 and (out / "sample" / "grid.png").is_file()
    assert len(list((out / "translate" / "translated").glob("*.png"))) == 2
    assert (out / "translate" / "grid.png").is_file() and (out / "sdft.safetensors").is_file()
    assert (out / "ema_unet" / "config.json").is_file() and (out / "domain_classifier.safetensors").is_file()
    clf = torch.load(out / "checkpoints" / "train_classifier" / "last.ckpt", weights_only=True)
    assert clf["global_step"] == 2 and all(k.startswith("classifier.") for k in clf["state_dict"])
    assert {"classifier/loss", "classifier/acc"} <= metrics.keys()
    for key in ("eval/generation/fid", "eval/generation/kid", "eval/pairs/psnr", "eval/translation_sdedit/psnr",
                "eval/translation_sdedit/ssim", "eval/translation_sdedit/fid", "translate/psnr"):  # fmt: skip
        assert key in metrics, key
    # source and fine-tuned samples from the same noise differ (the model trained) but stay aligned (DDIB): closer
    # than the fine-tuned sample of one noise is to the source sample of another
    from diffedit_lab.evaluation.suite import to_unit
    from diffedit_lab.methods.sdft.inference import _generate

    m = result.objects["method"]
    tuned = _generate(m, m.sampling_prior(ema=True), [1], m.cfg.sample)
    other = _generate(m, m.teacher, [2], m.cfg.sample)
    unrelated = float(-10 * torch.log10((to_unit(tuned) - to_unit(other)).square().mean()))
    assert unrelated < metrics["eval/pairs/psnr"] < 100
    assert result.objects["method"]._frozen["teacher"] is not None
    # edit: Asyrp trained on the fine-tuned EMA U-Net itself (no reload), its metrics and the paper's Tab. 2 row
    method = result.objects["method"]
    asyrp = method.editors["smiling"]
    assert asyrp.prior.unet is method.ema.module and asyrp.cfg.prompt.text == "smiling face"
    assert (out / "edit" / "smiling" / "asyrp.safetensors").is_file()
    assert metrics["edit/clip_dir"] == metrics["edit/smiling/clip_dir"] and "edit/identity" in metrics
    table = (out / "edit" / "table.md").read_text()
    assert "| smiling |" in table and "| paper: Ours (SDFT), metfaces | 0.0810 | 0.7650 |" in table


def test_resume_is_bit_exact_with_ema(tmp_path, cache_dir):
    full, parts = tmp_path / "full", tmp_path / "parts"
    base = ("stage=fit", "method.fit.steps=6", "method.fit.checkpoint_every=3")
    run(_cfg(full, cache_dir, *base))
    run(_cfg(parts, cache_dir, *base, "trainer.max_steps=3"))
    assert torch.load(parts / "checkpoints/fit/last.ckpt", weights_only=True)["global_step"] == 3
    run(_cfg(parts, cache_dir, *base, "ckpt_path=last"))
    a = torch.load(full / "checkpoints/fit/last.ckpt", weights_only=False)
    b = torch.load(parts / "checkpoints/fit/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert torch.equal(a["sdft_noise_rng"], b["sdft_noise_rng"])


def test_sample_from_a_finished_run(tmp_path, cache_dir):
    out = tmp_path / "run"
    run(_cfg(out, cache_dir, "stage=fit", "method.fit.steps=2"))
    run(_cfg(out, cache_dir, "stage=sample", "method.sample.num_images=2"))  # finds <run>/sdft.safetensors
    first = (out / "sample" / "00000.png").read_bytes()
    other = tmp_path / "other"
    run(_cfg(other, cache_dir, "stage=sample", "method.sample.num_images=2", f"method.weights={out}/sdft.safetensors"))
    assert (other / "sample" / "00000.png").read_bytes() == first  # DDIM η = 0 from the same EMA: same image
    with pytest.raises(UserError, match="no trained SDFT model"):
        run(_cfg(tmp_path / "empty", cache_dir, "stage=sample"))
    with pytest.raises(UserError, match="no trained EGSDE domain classifier: run stage train_classifier"):
        run(_cfg(out, cache_dir, "stage=translate", "method.translate.method=egsde"))


def test_the_paper_command_offline_names_the_missing_weights(tmp_path):
    code, err = cli_in_process("method=sdft", "data=metfaces", f"paths.output_dir={tmp_path}", "logger=none")
    assert code == 2
    assert re.fullmatch(r"error: prior\.source=\S*adm-ffhq-256: no such file or folder", err.strip()), err


def test_presets_compose(tmp_path):
    expected = {
        "sdft_metfaces": (0.1, 3.0, 0.1, 50.0, "source"),
        "sdft_aahq": (0.1, 3.0, 0.3, 50.0, "source"),
        "sdft_finetune": (0.0, 3.0, 0.0, 50.0, "source"),
        "sdft_scratch": (0.0, 3.0, 0.0, 50.0, "random"),
    }
    for name, (lam, gam, lam_aux, gam_aux, init) in expected.items():
        m = compose_config([f"experiment={name}", f"paths.output_dir={tmp_path}"]).method
        assert (m.loss.lambda_distill, m.loss.gamma_distill, m.loss.lambda_aux, m.loss.gamma_aux, m.init) == (
            lam, gam, lam_aux, gam_aux, init), name  # fmt: skip
        assert m.optim.lr == 2e-5 and m.optim.weight_decay == 0.0 and m.fit.steps == 10_000 and m.ema.decay == 0.9999


def test_edit_under_the_presets_trainer_and_an_explicit_checkpoint(tmp_path, cache_dir):
    """The presets accumulate gradients (4) and pass checkpoints by path: the nested Asyrp runs get their own trainer
    settings, never SDFT's checkpoint, and are scored on target images they did not train on; the EMA they edit
    with stays in eval mode (no dropout) through SDFT's fit."""
    out = tmp_path / "run"
    acc = "trainer.accumulate_grad_batches=2"
    run(_cfg(out, cache_dir, "stage=fit", "method.fit.steps=2", "method.fit.fid_every=0", acc))
    ckpt = out / "checkpoints" / "fit" / "last.ckpt"
    result = run(_cfg(out, cache_dir, "stage=[fit,edit]", "method.fit.steps=2", "method.fit.fid_every=0", acc,
                      f"ckpt_path={ckpt}"))  # fmt: skip
    method = result.objects["method"]
    asyrp = method.editors["smiling"]
    assert not method.ema.training and not asyrp.prior.unet.training
    assert (out / "edit" / "smiling" / "checkpoints" / "fit" / "last.ckpt").is_file()
    from diffedit_lab.methods.sdft.edit import CarvedSplits

    view = CarvedSplits(result.objects["datamodule"], asyrp.cfg.fit.num_images)
    trained = {int(view.dataset("train")[i]["index"]) for i in range(len(view.dataset("train")))}
    scored = {int(view.dataset("test")[i]["index"]) for i in range(len(view.dataset("test")))}
    assert trained and scored and not trained & scored


def test_a_bad_edit_setting_stops_before_sdft_trains(tmp_path, cache_dir):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"fit\.epochs=0"):
        run(_cfg(out, cache_dir, "stage=[fit,edit]", "method.edit.overrides=['method.fit.epochs=0']"))
    assert not (out / "checkpoints").exists()


def test_ddp_ranks_draw_their_own_noise_and_the_checkpoint_keeps_every_stream(tmp_path, cache_dir):
    out = tmp_path / "run"
    run(_cfg(out, cache_dir, "trainer=ddp_sim", "stage=fit", "method.fit.steps=2", "method.fit.fid_every=0",
             "callbacks=none"))  # fmt: skip
    ckpt = torch.load(out / "checkpoints" / "fit" / "last.ckpt", weights_only=True)
    ranks = ckpt["sdft_noise_rng_ranks"]
    assert ranks.shape[0] == 2 and not torch.equal(ranks[0], ranks[1])
    assert torch.equal(ranks[0], ckpt["sdft_noise_rng"])  # rank 0 wrote the file: its own stream
