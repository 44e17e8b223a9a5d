"""diffedit_lab.utils.weights: every unreadable checkpoint is one line; the offline/cache helpers never download."""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffedit_lab.utils import errors
from diffedit_lab.utils import io as project_io
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.weights import (
    hf_cached_file,
    hub_cache_path,
    load_weights,
    missing_weights,
    offline_mode,
    resolve_hub_file,
    torch_hub_checkpoints,
)

STATE = {"layer.weight": torch.arange(6.0).view(2, 3), "layer.bias": torch.zeros(2)}


def _torch_save(obj, **kwargs):
    def write(path: Path) -> None:
        torch.save(obj, path, **kwargs)

    return write


def _truncate(write, keep: float = 0.5):
    def write_truncated(path: Path) -> None:
        write(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return write_truncated


def _bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def _directory(path: Path) -> None:
    path.mkdir()


BAD_FILES = {
    # case: (file name, writer, words the reason must contain)
    "random bytes": ("y.pt", _bytes(os.urandom(4096)), "not in a known checkpoint format"),
    "empty file": ("y.pt", _bytes(b""), "empty"),
    "text file": ("y.pt", _bytes(b"model: ffhq\nsteps: 10\n"), "text file"),
    "directory": ("y.pt", _directory, "directory"),
    "truncated zip": ("y.pt", _truncate(_torch_save(STATE)), "truncated"),
    "truncated legacy format": (
        "y.pt",
        _truncate(_torch_save(STATE, _use_new_zipfile_serialization=False)),
        "truncated",
    ),
    "arbitrary object (zip)": ("y.pt", _torch_save({"opts": argparse.Namespace(lr=1)}), "argparse.Namespace"),
    "arbitrary object (legacy)": (
        "y.pt",
        _torch_save({"opts": argparse.Namespace(lr=1)}, _use_new_zipfile_serialization=False),
        "argparse.Namespace",
    ),
    "plain pickle": ("y.pkl", _bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4)), "pickle.dump"),
    "random bytes .safetensors": ("y.safetensors", _bytes(os.urandom(256)), "not in a known checkpoint format"),
    "truncated safetensors": ("y.safetensors", _truncate(lambda p: save_file(STATE, str(p)), 0.9), "safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unreadable_file_is_one_user_error_line(tmp_path, capfd, case):
    name, write, reason = BAD_FILES[case]
    path = tmp_path / "x" / name
    path.parent.mkdir()
    write(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be warned either
        with pytest.raises(UserError) as info:
            load_weights(path, "SDD mapper", expected="a mapper.pt written by the fit stage")
    message = str(info.value)
    assert message.startswith(f"SDD mapper: '{path}' is not a readable PyTorch checkpoint or safetensors file (")
    assert message.endswith("expected a mapper.pt written by the fit stage)")
    assert reason in message
    assert "\n" not in message and "weights_only" not in message
    out, err = capfd.readouterr()
    assert out == err == ""


def _same(a, b) -> bool:
    if isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and torch.equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    return a == b


CHECKPOINT = {"state_dict": STATE, "epoch": 3, "name": "x", "levels": [1, 2]}


@pytest.mark.parametrize(
    ("name", "write", "expected"),
    [
        ("s.pt", _torch_save(STATE), STATE),
        ("s.ckpt", _torch_save(CHECKPOINT), CHECKPOINT),
        ("s.pth", _torch_save(STATE, _use_new_zipfile_serialization=False), STATE),
        ("s.safetensors", lambda p: save_file(STATE, str(p)), STATE),
        ("s.bin", lambda p: save_file(STATE, str(p)), STATE),  # safetensors content, other extension
        ("codes.pt", _torch_save(torch.ones(2, 3, 4)), torch.ones(2, 3, 4)),
    ],
)
def test_readable_files_load(tmp_path, name, write, expected):
    path = tmp_path / name
    write(path)
    assert _same(load_weights(path, "weights"), expected)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match=f"ArcFace: file not found: '{tmp_path / 'nope.pt'}'"):
        load_weights(tmp_path / "nope.pt", "ArcFace")


def test_old_import_paths_still_work():
    assert project_io.load_weights is load_weights
    assert errors.missing_weights is missing_weights
    msg = str(missing_weights("CLIP ViT-B-32", "open_clip ViT-B-32/openai", hint="or set clip.pretrained"))
    assert "CLIP ViT-B-32" in msg and "HF_HUB_OFFLINE" in msg and msg.endswith("; or set clip.pretrained")


# --------------------------------------------------------------------------------------- offline / cache
@pytest.mark.parametrize(("value", "offline"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("", False)])
def test_offline_mode_reads_the_environment_now(monkeypatch, value, offline):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert offline_mode() is offline


def _fake_hf_cache(root: Path, repo: str, filename: str, data: bytes = b"x") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/<file>}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(data)
    return snapshot / filename


def test_hf_cached_file_finds_the_first_cached_name(tmp_path):
    path = _fake_hf_cache(tmp_path, "org/clip", "open_clip_pytorch_model.bin")
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert hf_cached_file("org/clip", names, cache_dir=tmp_path) == str(path)
    assert hf_cached_file("org/clip", "open_clip_model.safetensors", cache_dir=tmp_path) is None
    assert hf_cached_file("org/other", names, cache_dir=tmp_path) is None


def test_resolve_hub_file_explicit_cached_or_one_line_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = "https://example.invalid/models/net-1234abcd.pth"
    args = ("LPIPS alexnet backbone", "net-1234abcd.pth", url)
    with pytest.raises(UserError) as info:
        resolve_hub_file(*args, None, "lpips.backbone_path")
    message = str(info.value)
    assert "net-1234abcd.pth" in message and "lpips.backbone_path" in message and "\n" not in message
    assert str(hub_cache_path("net-1234abcd.pth")) in message
    with pytest.raises(UserError, match="file not found"):
        resolve_hub_file(*args, str(tmp_path / "missing.pth"), "lpips.backbone_path")
    local = tmp_path / "mine.pth"
    local.write_bytes(b"x")
    assert resolve_hub_file(*args, str(local), "k") == local
    cached = hub_cache_path("net-1234abcd.pth")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"y")
    assert resolve_hub_file(*args, None, "k") == cached


def test_torch_hub_checkpoints_serves_files_and_restores_the_hub_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    before = torch.hub.get_dir()
    weights = tmp_path / "w.pth"
    torch.save({"a": torch.ones(1)}, weights)
    with torch_hub_checkpoints({"net-00000000.pth": weights}):
        state = torch.hub.load_state_dict_from_url("https://example.invalid/net-00000000.pth", progress=False)
    assert torch.equal(state["a"], torch.ones(1))
    assert torch.hub.get_dir() == before
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))  # still follows $TORCH_HOME afterwards
    assert torch.hub.get_dir() == str(tmp_path / "elsewhere" / "hub")
