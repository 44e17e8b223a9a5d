"""Rectifier through the runner on tiny models: every stage end to end, bit-exact resume of both training stages,
reconstruct / edit / apply alone from a finished run, one-line errors, and the paper presets."""

from __future__ import annotations

import json

import pytest
import torch

from diffedit_lab.methods.rectifier.config import RectifierConfig
from diffedit_lab.run import build_method, run
from diffedit_lab.utils.artifacts import load_artifact
from diffedit_lab.utils.config import compose_config
from diffedit_lab.utils.errors import UserError
from tests.helpers import cli_in_process, tiny_overrides


def _cfg(out, cache, *overrides: str):
    return compose_config([*tiny_overrides(out, cache, method="rectifier"), *overrides])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    """One default run (fit → reconstruct → edit → eval) shared by the tests below."""
    out = tmp_path_factory.mktemp("rectifier") / "run"
    run(_cfg(out, cache_dir))
    return out


def test_every_stage_end_to_end(finished):
    out = finished
    metrics = json.loads((out / "metrics.json").read_text())
    fit = torch.load(out / "checkpoints/fit/last.ckpt", weights_only=True)
    edit = torch.load(out / "checkpoints/edit/last.ckpt", weights_only=True)
    assert fit["global_step"] == 4 and edit["global_step"] == 4 and edit["diffedit_stage"] == "edit"
    assert all(k.startswith("rectifier.") for k in fit["state_dict"])  # the frozen U-Net is never saved
    assert {k.split(".")[0] for k in edit["state_dict"]} == {"rectifier", "editor"}
    exported = load_artifact(out / "rectifier.safetensors", "rectifier").state
    head = "subnets.0.head_out.weight"
    assert torch.equal(edit["state_dict"][f"rectifier.{head}"], exported[f"rectifier.{head}"])  # untouched by edit
    assert exported[f"rectifier.{head}"].abs().sum() > 0  # Δ moved off zero during fit
    assert not torch.equal(edit["state_dict"][f"editor.{head}"], exported[f"rectifier.{head}"])
    for key in ("fit/loss", "fit/base_mse", "edit/loss", "edit/clip", "edit/l1", "edit/clip_dir", "edit/identity",
                "edit/fid", "edit/l1", "eval/clip_dir", "eval/fid"):  # fmt: skip
        assert key in metrics, key
    for model in ("rectified", "base"):
        for m in ("l1", "l2", "ssim", "psnr", "eps_mse"):
            assert f"reconstruct/{model}/{m}" in metrics
    table = (out / "reconstruct/table.csv").read_text().splitlines()
    assert table[0] == "model,eps_mse,l1,l2,psnr,ssim" and [r.split(",")[0] for r in table[1:]] == ["base", "rectifier"]
    assert (out / "reconstruct/table.md").is_file() and (out / "reconstruct/grid.png").is_file()
    assert len(list((out / "reconstruct/rectified").glob("*.png"))) == 2 == len(list((out / "edit/edited").glob("*")))
    assert (out / "editor.safetensors").is_file() and (out / "edit/grid.png").is_file()


def test_reconstruct_edit_and_apply_alone_load_the_trained_weights(finished, tmp_path, cache_dir):
    out = finished
    before = (out / "reconstruct/rectified").glob("*.png")
    images = {p.name: p.read_bytes() for p in before}
    other = tmp_path / "other"
    run(_cfg(other, cache_dir, "stage=reconstruct", f"method.weights={out}/rectifier.safetensors"))
    assert {p.name: p.read_bytes() for p in (other / "reconstruct/rectified").glob("*.png")} == images
    run(_cfg(other, cache_dir, "stage=apply", f"method.weights={out}/rectifier.safetensors",
             f"method.editor_weights={out}/editor.safetensors"))  # fmt: skip
    edited = {p.name: p.read_bytes() for p in (out / "edit/edited").glob("*.png")}
    assert {p.name: p.read_bytes() for p in (other / "edit/edited").glob("*.png")} == edited
    # stage=edit alone on the finished run's dir: finds <run>/rectifier.safetensors and trains a new editor
    again = tmp_path / "again"
    run(_cfg(again, cache_dir, "stage=edit", f"method.weights={out}/rectifier.safetensors", "prompt=angry"))
    assert json.loads((again / "metrics.json").read_text())["edit/num_images"] == 2
    with pytest.raises(UserError, match="no trained rectifier"):
        run(_cfg(tmp_path / "empty", cache_dir, "stage=reconstruct"))
    with pytest.raises(UserError, match="no trained editor"):
        run(_cfg(tmp_path / "empty2", cache_dir, "stage=apply", f"method.weights={out}/rectifier.safetensors"))


def _same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pa, pb in zip(sa["state"].values(), sb["state"].values(), strict=True):
            assert all(torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])) for k in pa)
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.parametrize("stage", ["fit", "edit"])
def test_resume_is_bit_exact(stage, finished, tmp_path, cache_dir):
    full, parts = tmp_path / "full", tmp_path / "parts"
    base = (f"stage={stage}", f"method.{stage}.steps=6", f"method.{stage}.checkpoint_every=3",
            f"method.weights={finished}/rectifier.safetensors", f"method.{stage}.lr_decay.every=2")  # fmt: skip
    run(_cfg(full, cache_dir, *base))
    run(_cfg(parts, cache_dir, *base, "trainer.max_steps=3"))
    assert torch.load(parts / f"checkpoints/{stage}/last.ckpt", weights_only=True)["global_step"] == 3
    run(_cfg(parts, cache_dir, *base, "ckpt_path=last"))
    a = torch.load(full / f"checkpoints/{stage}/last.ckpt", weights_only=False)
    b = torch.load(parts / f"checkpoints/{stage}/last.ckpt", weights_only=False)
    _same_state(a, b)
    assert a["lr_schedulers"][0]["last_epoch"] == 6 and a["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(
        1e-3 * 0.9**3
    )


@pytest.mark.parametrize(
    ("override", "mention"),
    [
        ("method.apply=loop", "method.apply='loop': expected one of ['grouped', 'vmap']"),
        ("method.reconstruct.steps=0", "method.reconstruct.steps=0"),
        ("method.reconstruct.metrics=[fid]", "'fid' is not one of"),
        ("method.edit.init=copy", "method.edit.init='copy'"),
        ("method.net.encoder.pretrained=/no/resnet34.pth", "no such file"),
        ("method.net.layers=[decoder.*]", "matches no convolution"),
        ("method.base_dtype=fp16", "method.base_dtype='fp16': expected fp32: in a half-precision U-Net"),
        ("method.base_dtype=bf16", "method.base_dtype='bf16': expected fp32"),
        ("method.base_dtype=auto", "method.base_dtype='auto': expected fp32"),
        ("method.fit.preview_t=1000", "method.fit.preview_t=1000"),
        ("method.edit.preview_t=1000", "method.edit.preview_t=1000"),
    ],
)
def test_bad_option_is_one_error_line(override, mention, tmp_path):
    code, err = cli_in_process(*tiny_overrides(tmp_path / "run", tmp_path / "cache", method="rectifier"), override,
                               "stage=fit")  # fmt: skip
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert lines[-1].startswith("error:") and mention in lines[-1], lines[-1]


def test_the_paper_command_offline_names_the_missing_data(tmp_path):
    code, err = cli_in_process("method=rectifier", "prior=ddpm_celebahq", "data=celebahq", "logger=none",
                               f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}/data")  # fmt: skip
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:"), err[-2000:]


def test_presets_compose(tmp_path):
    for name, prior, steps in (("rectifier_celebahq", "google/ddpm-ema-celebahq-256", 50),
                               ("rectifier_church", "google/ddpm-ema-church-256", 20)):  # fmt: skip
        cfg = compose_config([f"experiment={name}", f"paths.output_dir={tmp_path}"])
        m = cfg.method
        assert m.base.source == prior and m.reconstruct.steps == steps
        assert (m.fit.optim.lr, m.fit.optim.weight_decay, m.fit.lr_decay.every, m.fit.lr_decay.gamma) == (
            1e-3, 1e-5, 5000, 0.9)  # fmt: skip
        assert (m.edit.optim.lr, m.edit.optim.weight_decay, m.edit.lr_decay.every) == (1e-3, 0.0, 10)
        assert list(m.net.encoder.layers) == [3, 4, 6, 3] and list(m.net.layers) == ["mid_block.*", "up_blocks.*"]
    for name, text in (("smiling", "smiling face"), ("man", "man"), ("pixar", "3D render in the style of Pixar")):
        cfg = compose_config([f"experiment=rectifier_edit_{name}", f"paths.output_dir={tmp_path}"])
        assert cfg.method.prompt.text == text and list(cfg.stage) == ["edit", "eval"]
        assert cfg.method.edit.lambda_clip == cfg.method.edit.lambda_l1 == 1.0 and cfg.method.edit.train_images == 100


def test_empty_source_text_is_refused_by_the_stages_that_need_a_direction(tmp_path):
    code, err = cli_in_process(*tiny_overrides(tmp_path / "run", tmp_path / "cache", method="rectifier"),
                               "prompt.source_text=''", "stage=edit")  # fmt: skip
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and not (tmp_path / "run").exists(), err[-2000:]
    assert lines[-1].startswith("error: method.prompt.source_text='': stage edit: the directional CLIP loss"), lines
    from diffedit_lab.utils.schema import validate

    def cfg(*overrides):
        node = compose_config([*tiny_overrides(tmp_path, tmp_path, method="rectifier"), "prompt.source_text=' '",
                               *overrides]).method  # fmt: skip
        return validate(RectifierConfig, node, "method")

    default, quiet = cfg(), cfg("method.edit.lambda_clip=0", "method.edit.sample.metrics=[l1]")
    for stage, refused in (("fit", False), ("reconstruct", False), ("edit", True), ("apply", True), ("eval", True)):
        if refused:
            with pytest.raises(UserError, match=f"stage {stage}: "):
                default.check_stage("method", stage)
        else:
            default.check_stage("method", stage)
    quiet.check_stage("method", "edit")  # no CLIP loss, no clip_dir metric: no direction needed
    quiet.check_stage("method", "apply")
    with pytest.raises(UserError, match="stage eval: the clip_dir metric"):
        quiet.check_stage("method", "eval")


def test_scratch_editor_with_base_inversion_needs_no_trained_rectifier(tmp_path, cache_dir, monkeypatch):
    from diffedit_lab.diffusion import samplers
    from diffedit_lab.diffusion.priors import UnconditionalPrior

    inverters = []
    invert = samplers.ddim_invert
    monkeypatch.setattr(samplers, "ddim_invert", lambda prior, *a, **k: inverters.append(prior) or invert(prior, *a,
                        **k))  # fmt: skip
    scratch = ("stage=edit", "method.edit.init=scratch")
    with pytest.raises(UserError, match="no trained rectifier"):  # scratch, but the rectifier inverts
        run(_cfg(tmp_path / "a", cache_dir, *scratch))
    out = tmp_path / "b"
    run(_cfg(out, cache_dir, *scratch, "method.edit.sample.invert_with=base"))
    assert (out / "editor.safetensors").is_file() and not (out / "rectifier.safetensors").exists()
    assert inverters and all(type(p) is UnconditionalPrior for p in inverters)  # the plain model inverted


def test_scratch_editor_starts_at_zero_offsets_beside_a_trained_rectifier(finished, tmp_path, cache_dir):
    module = build_method(_cfg(tmp_path, cache_dir, "method.edit.init=scratch").method)
    module.load_trained(finished / "rectifier.safetensors", "fit")
    module.build_editor()
    heads = [(r.head_out.weight, e.head_out.weight) for r, e in zip(module.rectifier.subnets, module.editor.subnets)]
    assert all(r.abs().sum() > 0 for r, _ in heads) and all(torch.equal(e, torch.zeros_like(e)) for _, e in heads)


def test_preview_t_must_be_a_timestep_of_the_prior(tmp_path, cache_dir, monkeypatch):
    import typing

    from diffedit_lab.methods.stage import Stage
    from diffedit_lab.models.rectifier import STRATEGIES

    assert typing.get_args(typing.get_type_hints(RectifierConfig)["apply"]) == STRATEGIES
    from diffedit_lab.diffusion.priors.shape import PriorShape
    from diffedit_lab.methods.preflight import Preflight

    module = build_method(_cfg(tmp_path, cache_dir, "method.edit.preview_t=600").method)
    pre = Preflight(tmp_path, [Stage("edit", train=True)])
    real = pre.prior_shape(module.cfg.base)  # read from the config, no weights built
    assert real is not None and real.num_train_timesteps == 1000
    pre.cache[repr(module.cfg.base)] = PriorShape(real.unet_config, 600)  # a prior with T = 600
    with pytest.raises(UserError, match=r"method.edit.preview_t=600: expected < T=600"):
        type(module).check_base(module.cfg, pre, "edit")
