"""Start-up checks that run before anything is built: data options, component weight files, resume lookup."""

from __future__ import annotations

import os
import time

import pytest
import torch
from omegaconf import OmegaConf

from diffedit_lab import checks
from diffedit_lab.callbacks.checkpoint_io import latest_checkpoint
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.schema import ConfigError


def test_a_data_key_its_datamodule_does_not_take_is_one_line():
    node = OmegaConf.create({"_target_": "diffedit_lab.data.datamodule.ImageDataModule", "root": "x", "num_test": 8})
    with pytest.raises(ConfigError, match=r"data.num_test=8: not an option of ImageDataModule") as err:
        checks.check_data_options(node)
    assert "resolution" in str(err.value) and "\n" not in str(err.value)
    checks.check_data_options(OmegaConf.create({"_target_": "diffedit_lab.data.latents.LatentCodesDataModule",
                                                "num_test": 8}))  # fmt: skip


def test_component_files_are_checked_by_the_key_the_user_types(tmp_path):
    real = tmp_path / "g.pt"
    real.write_bytes(b"x")
    cfg = OmegaConf.create(
        {
            "generator": {"_target_": "a.b", "checkpoint": str(tmp_path / "missing.pt")},
            "prior": {"_target_": "a.b", "source": "CompVis/stable-diffusion-v1-4"},  # a hub id: the loader's job
            "method": {"generator": "${generator}", "teacher": "${prior}", "own": {"_target_": "a", "path": "./no"}},
        }
    )
    with pytest.raises(UserError, match=r"^generator.checkpoint=.*missing.pt: no such file"):
        checks.check_component_files(cfg, ["generator", "teacher"])
    checks.check_component_files(cfg, ["teacher"])
    with pytest.raises(UserError, match=r"^method.own.path=./no"):
        checks.check_component_files(cfg, ["own"])
    cfg.generator.checkpoint = str(real)
    checks.check_component_files(cfg, ["generator", "teacher"])


def test_latest_checkpoint_is_the_newest_whole_file(tmp_path):
    assert latest_checkpoint(tmp_path / "none") is None
    (tmp_path / "last.ckpt").write_bytes(b"a")
    time.sleep(0.01)
    (tmp_path / "step_000010.ckpt").write_bytes(b"b")  # killed before last.ckpt was rewritten
    assert latest_checkpoint(tmp_path).name == "step_000010.ckpt"
    now = time.time_ns()
    os.utime(tmp_path / "last.ckpt", ns=(now, now))
    os.utime(tmp_path / "step_000010.ckpt", ns=(now, now))
    assert latest_checkpoint(tmp_path).name == "last.ckpt"  # same save: last.ckpt wins the tie


def test_method_rng_streams_are_saved_and_restored():
    from diffedit_lab.methods.base import EditingMethod

    torch.manual_seed(3)
    a = EditingMethod({})
    first = torch.rand(4, generator=a.rng("noise"))
    assert not torch.equal(first, torch.rand(4, generator=a.rng("t")))  # streams differ by name
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    expected = torch.rand(4, generator=a.rng("noise"))
    b = EditingMethod({})
    b.on_load_checkpoint(ckpt)
    assert torch.equal(torch.rand(4, generator=b.rng("noise")), expected)  # continues where the save was
    torch.manual_seed(3)
    assert torch.equal(torch.rand(4, generator=EditingMethod({}).rng("noise")), first)  # seeded by the run seed
