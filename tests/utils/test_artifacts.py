"""Trained artifacts: safetensors + a JSON config in the header, written atomically; old exports still load."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from diffedit_lab.utils.artifacts import load_artifact, read_artifact_config, save_artifact
from diffedit_lab.utils.errors import UserError


def test_round_trip_keeps_tensors_bit_exact_and_the_config(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3, dtype=torch.float64), "n": torch.tensor(7)}
    path = save_artifact(tmp_path / "net.safetensors", state, {"prompt": "angry face", "layers": ["x", "y"]})
    assert read_artifact_config(path) == {"prompt": "angry face", "layers": ["x", "y"]}  # header only
    art = load_artifact(path, "net")
    assert art.kind == "artifact" and art.config["layers"] == ["x", "y"]
    for k, v in state.items():
        assert art.state[k].dtype == v.dtype and torch.equal(art.state[k], v)
    # the file is safetensors: an 8-byte header length, then JSON naming every tensor and our config
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    assert set(header) == {*state, "__metadata__"} and json.loads(header["__metadata__"]["diffedit_lab"])["prompt"]
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left beside it


def test_tied_and_view_tensors_are_stored_each_once(tmp_path):
    base = torch.randn(4, 4)
    state = {"w": base, "tied": base, "row": base[1], "t": base.t()}
    art = load_artifact(save_artifact(tmp_path / "tied.safetensors", state, {}), "tied")
    for k, v in state.items():
        assert torch.equal(art.state[k], v)


def test_old_exports_and_lightning_checkpoints_still_load(tmp_path):
    w = {"lin.weight": torch.ones(2, 2)}
    torch.save({"mapper": w, "prompt": "angry face", "levels": ["coarse"]}, tmp_path / "mapper.pt")
    art = load_artifact(tmp_path / "mapper.pt", "SDD mapper", legacy_state_key="mapper")
    assert art.kind == "legacy" and art.config == {"prompt": "angry face", "levels": ["coarse"]}
    assert torch.equal(art.state["lin.weight"], w["lin.weight"])
    torch.save({"state_dict": w, "meta": {"t_edit": 500}}, tmp_path / "asyrp.pt")
    assert load_artifact(tmp_path / "asyrp.pt", "asyrp").config == {"meta": {"t_edit": 500}}
    torch.save({"state_dict": w, "pytorch-lightning_version": "2.6", "global_step": 3}, tmp_path / "last.ckpt")
    ckpt = load_artifact(tmp_path / "last.ckpt", "fit checkpoint")
    assert ckpt.kind == "checkpoint" and ckpt.config["global_step"] == 3 and set(ckpt.state) == set(w)
    torch.save(w, tmp_path / "bare.pt")
    assert load_artifact(tmp_path / "bare.pt", "bare").kind == "legacy"


def test_what_is_not_an_export_is_one_line(tmp_path):
    torch.save({"names": ["a"]}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="neither an export of this project nor a Lightning checkpoint"):
        load_artifact(tmp_path / "other.pt", "SDD mapper")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(UserError, match="SDD mapper: '.*cut.safetensors' is not a readable"):
        load_artifact(tmp_path / "cut.safetensors", "SDD mapper")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_artifact(tmp_path / "bad.safetensors", {"w": torch.ones(1)}, {"x": object()})
