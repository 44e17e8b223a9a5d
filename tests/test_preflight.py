"""Every check of every requested stage runs before the FIRST stage (issue: nothing lost): bad values of later
stages, data other stages use, structure read from the prior, trained weights a stage will load, corrupt weight
files, the comparison's entries — each one ``error:`` line, exit 2, within seconds, nothing built, nothing in the run
dir touched. And a training stage never starts over on its finished output without ``overwrite=true``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from diffedit_lab.utils.artifacts import load_artifact
from tests.helpers import cli_in_process


def _cli(run_dir: Path, cache: Path, method: str, *overrides: str) -> tuple[int, str]:
    return cli_in_process(
        f"method={method}",
        *overrides,
        "logger=none",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={cache}",
        "trainer.enable_progress_bar=false",
    )


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in run.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


def _assert_one_error(code: int, err: str, mention: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert lines and lines[-1].startswith("error:"), err[-2000:]
    assert sum(line.startswith("error:") for line in lines) == 1, err[-2000:]
    assert mention in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs the table points at: an image folder, an empty folder, broken weight files."""
    root = tmp_path_factory.mktemp("inputs")
    from PIL import Image

    (root / "images").mkdir()
    Image.new("RGB", (32, 32), (128, 64, 32)).save(root / "images" / "a.png")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    good = root / "good.pt"
    torch.save({"state_dict": {"x": torch.zeros(2)}}, good)
    (root / "truncated.pt").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (root / "text.pt").write_text("this is not a checkpoint\n")
    (root / "zip.pt").write_bytes(b"PK\x03\x04" + os.urandom(300))
    (root / "layout.pt").write_bytes(good.read_bytes())  # a whole checkpoint with the wrong keys
    return {p.stem: p for p in root.iterdir()}


# (method, overrides, what the error line must mention); FILE:<name> is a path from `files`
LATE = [
    # data a stage reads, checked with the run's own data before anything is built
    ("sdd/tiny", ["data=celebahq", "data.root=FILE:empty"], "no images found"),
    ("sdd/tiny", ["data=celebahq", "data.root=FILE:images", "data.exclude_list=/no/such/list.txt"], "exclude_list"),
    ("sdd/tiny", ["method.edit.photos.names=[astronaut,nosuch]"], "nosuch"),
    ("sdd/tiny", ["stage=[fit,edit]", "method.edit.photos.exclude_list=/no/such/list.txt"], "method.edit.photos"),
    ("sdft/tiny", ["stage=[fit,translate]", "method.translate.source.names=[nosuch]"], "method.translate.source"),
    ("sdft/tiny", ["stage=[fit,train_classifier]", "method.translate.source=null"], "method.translate.source"),
    (
        "sdft/tiny",
        ["stage=[fit,train_classifier,translate]", "method.translate.method=egsde", "method.egsde.downsample=3"],
        "downsample=3",
    ),  # fmt: skip
    ("sdft/tiny", ["stage=[fit,edit]", "method.edit.overrides=[method.schedule.t_0=5000]"], "t_0=5000"),
    # structure read from the prior's config (no weights): layer patterns, image size, T
    ("rectifier/tiny", ["method.net.layers=[nothing.*]"], "matches no convolution"),
    ("rectifier/tiny", ["data.resolution=16"], "takes 32x32"),
    ("rectifier/tiny", ["method.edit.preview_t=1000"], "method.edit.preview_t=1000"),
    ("asyrp/tiny", ["method.schedule.t_0=1000"], "t_0=1000"),
    ("asyrp/tiny", ["method.fit.batch_size=3"], "method.fit.batch_size=3"),
    ("sdft/tiny", ["stage=[fit,sample]", "method.sample.steps=1001"], "method.sample.steps=1001"),
    ("sdft/tiny", ["stage=[fit,train_classifier,translate]", "method.translate.steps=2000"], "translate.steps=2000"),
    ("sdd/tiny", ["method.selection.timesteps=[200,1000]"], "[1000] not below the teacher's T=1000"),
    ("sdd/tiny", ["stage=[fit]", "method.selection.rule=fixed_1000"], "fixed_1000"),
    ("asyrp/tiny", ["data.resolution=16"], "takes 32x32"),
    # trained weights a stage will load when its training stage does not run
    ("sdd/tiny", ["stage=edit"], "no trained SDD mapper"),
    ("sdft/tiny", ["stage=sample"], "no trained SDFT model"),
    ("sdft/tiny", ["stage=[fit,translate]", "method.translate.method=egsde"], "no trained EGSDE domain classifier"),
    ("rectifier/tiny", ["stage=reconstruct"], "no trained rectifier"),
    ("rectifier/tiny", ["stage=[fit,apply]"], "no trained editor"),
    ("asyrp/tiny", ["stage=[edit,eval]"], "no trained Asyrp"),
    # corrupt weight files given by path: one line naming the file
    ("sdft/tiny", ["stage=sample", "method.weights=FILE:truncated"], "truncated"),
    ("rectifier/tiny", ["stage=reconstruct", "method.weights=FILE:text"], "text file"),
    ("asyrp/tiny", ["stage=edit", "method.weights=FILE:zip"], "zip.pt"),
    (
        "sdft/tiny",
        ["stage=[fit,translate]", "method.translate.method=egsde", "method.egsde.classifier_weights=FILE:truncated"],
        "truncated.pt",
    ),  # fmt: skip
    # values the schema or a stage's check refused only when the stage ran (audit of every method option)
    ("sdd/tiny", ["method.optim.lr=nan"], "method.optim.lr=nan"),  # AdamW refused it when fit began
    ("sdft/tiny", ["method.optim.weight_decay=nan"], "method.optim.weight_decay=nan"),
    ("asyrp/tiny", ["method.optim.lr=nan"], "method.optim.lr=nan"),  # SGD took it: a NaN loss after inversion
    ("rectifier/tiny", ["method.edit.optim._target_=torch.optim.NoSuch"], "cannot import it"),
    ("asyrp/tiny", ["method.edit.scale=nan"], "expected a finite number"),  # NaN edits, exit 0
    ("sdd/tiny", ["method.selection.rule=random", "method.selection.random_range=[20,5000]"], "expected timesteps <"),
    ("sdd/tiny", ["method.eval.folder.pred=FILE:images"], "method.eval.folder.ref"),
    (
        "rectifier/tiny",
        ["method.eval.folder.pred=/no/such/edits", "method.eval.folder.ref=FILE:images"],
        "method.eval.folder.pred=/no/such/edits",
    ),
    ("asyrp/tiny", ["method.eval.folder.pred=FILE:empty", "method.eval.folder.ref=FILE:images"], "has no images"),
    ("sdd/tiny", ["method.eval.reference_dir=FILE:empty"], "method.eval.reference_dir"),
    ("sdedit/tiny", ["method.eval.fid_weights_path=/no/such/inception.pth"], "no such file"),  # was: FID skipped
    ("sdd/tiny", ["method.edit.photos.num_workers=-1"], "method.edit.photos.num_workers=-1"),
    ("sdft/tiny", ["stage=[fit,translate]", "method.translate.source.root=''"], "method.translate.source.root"),
    (
        "sdft/tiny",
        [
            "stage=[fit,train_classifier,translate]",
            "method.translate.method=egsde",
            "method.egsde.classifier_weights=/no/such/classifier.pt",
        ],
        "method.egsde.classifier_weights",
    ),
    ("sdft/tiny", ["stage=[fit,edit]", 'method.edit.overrides=["method.fit.num_images=12"]'], "none left to evaluate"),
    ("asyrp/tiny", ["method.fit.num_images=100", "method.fit.batch_size=20"], "more than the 12 training images"),
    ("compare", ["experiment=compare_demo", "method.entries.rectifier.train_stages=[fit,nosuch]"], "train_stages"),
    # the comparison: every entry composed and checked before the first one runs
    (
        "compare",
        ["experiment=compare_demo", "method.entries.rectifier.weights=/no/such/rectifier.safetensors"],
        "compare entry 'rectifier'",
    ),  # fmt: skip
    ("compare", ["experiment=compare_demo", "method.entries.ddib.method=nosuch"], "compare entry 'ddib'"),
    ("compare", ["experiment=compare_demo", "method.entries.rectifier.weights=FILE:truncated"], "truncated"),
]


@pytest.mark.parametrize(("method", "overrides", "mention"), LATE, ids=[f"{m} {' '.join(o)}" for m, o, _ in LATE])
def test_a_later_stage_fails_before_the_first_starts(method, overrides, mention, files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    overrides = [o.replace("FILE:" + o.split("FILE:")[1], str(files[o.split("FILE:")[1]])) if "FILE:" in o else o
                 for o in overrides]  # fmt: skip
    run = tmp_path / "run"
    t0 = time.perf_counter()
    code, err = _cli(run, tmp_path / "cache", method, *overrides)
    _assert_one_error(code, err, mention)
    assert time.perf_counter() - t0 < 60, "a start-up check must not wait for a stage"
    written = [p for p in run.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"]
    assert not written, f"written before the error: {written}"


def test_a_wrong_layout_in_the_run_dir_is_one_line_naming_the_keys(files, tmp_path, monkeypatch):
    """A whole checkpoint with other keys left as the run dir's rectifier export: one line with the keys that differ."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    run.mkdir()
    (run / "rectifier.pt").write_bytes(files["layout"].read_bytes())  # an older version's export name: found
    code, err = _cli(run, tmp_path / "cache", "rectifier/tiny", "stage=reconstruct")
    line = _assert_one_error(code, err, "rectifier.pt")
    assert "missing [" in line and "unexpected [" in line


@pytest.mark.parametrize(
    ("method", "stage", "outputs"),
    [
        ("sdd/tiny", "fit", ["mapper.safetensors", "checkpoints/fit/last.ckpt"]),
        ("sdft/tiny", "fit", ["sdft.safetensors", "ema_unet/config.json", "checkpoints/fit/last.ckpt"]),
        ("sdft/tiny", "train_classifier", ["domain_classifier.safetensors"]),
        ("rectifier/tiny", "fit", ["rectifier.safetensors"]),
        ("rectifier/tiny", "[fit,edit]", ["checkpoints/fit/last.ckpt", "editor.safetensors"]),
        ("asyrp/tiny", "fit", ["asyrp.safetensors", "checkpoints/fit/step_2.ckpt"]),
        ("sdft/tiny", "[fit,edit]", ["edit/smiling/asyrp.safetensors"]),  # SDFT's nested Asyrp runs
    ],
)
def test_a_finished_stage_is_never_started_over(method, stage, outputs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    for name in outputs:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"hours of training")
    before = _snapshot(run)
    code, err = _cli(run, tmp_path / "cache", method, f"stage={stage}")
    line = _assert_one_error(code, err, "already has trained output")
    assert "ckpt_path=last" in line and "overwrite=true" in line and "hydra.run.dir" in line
    assert _snapshot(run) == before


@pytest.mark.slow
def test_a_bad_later_stage_never_reruns_the_first(tmp_path, monkeypatch):
    """The issue's report: a two-stage command on a finished SDFT run, the second stage's value bad — the first
    stage must not run again (its outputs, checkpoint and metrics stay byte for byte)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    code, err = _cli(run, tmp_path / "cache", "sdft/tiny", "stage=fit", "method.fit.fid_every=0")
    assert code == 0, err[-2000:]
    before = _snapshot(run)
    code, err = _cli(run, tmp_path / "cache", "sdft/tiny", "stage=[fit,translate]", "method.fit.fid_every=0",
                     "method.translate.method=egsde")  # fmt: skip
    _assert_one_error(code, err, "already has trained output")
    code, err = _cli(run, tmp_path / "cache", "sdft/tiny", "stage=[fit,translate]", "method.fit.fid_every=0",
                     "ckpt_path=last", "method.translate.method=egsde")  # fmt: skip
    _assert_one_error(code, err, "no trained EGSDE domain classifier")
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.slow
def test_overwrite_moves_the_old_output_aside(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    (run / "checkpoints" / "fit").mkdir(parents=True)
    (run / "rectifier.safetensors").write_bytes(b"old rectifier")
    (run / "checkpoints" / "fit" / "last.ckpt").write_bytes(b"old checkpoint")
    code, err = _cli(run, tmp_path / "cache", "rectifier/tiny", "stage=fit", "overwrite=true")
    assert code == 0, err[-2000:]
    moved = sorted(p.name for p in run.glob("rectifier.safetensors.replaced-*"))
    assert len(moved) == 1 and (run / moved[0]).read_bytes() == b"old rectifier"
    old_ckpts = list((run / "checkpoints").glob("fit.replaced-*/last.ckpt"))
    assert len(old_ckpts) == 1 and old_ckpts[0].read_bytes() == b"old checkpoint"
    assert (run / "rectifier.safetensors").read_bytes() != b"old rectifier"  # the new one, loadable
    assert load_artifact(run / "rectifier.safetensors", "rectifier").kind == "artifact"


def test_overwrite_must_be_a_boolean(tmp_path):
    code, err = _cli(tmp_path / "run", tmp_path / "cache", "sdd/tiny", "overwrite=maybe")
    _assert_one_error(code, err, "overwrite")
