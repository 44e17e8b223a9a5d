"""Shared fixtures: compose the REAL Hydra config and shrink it to tiny, CPU, offline runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import CONF, tiny_overrides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# Tiny convolutions on a 2-core machine run ~10x faster single-threaded.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose(tmp_path, cache_dir):
    """compose(*overrides, tiny=True) -> DictConfig from conf/config.yaml, like the CLI would build it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _compose(*overrides: str, tiny: bool = True, out_dir: Path | None = None):
        GlobalHydra.instance().clear()
        base = (
            tiny_overrides(out_dir or tmp_path / "run", cache_dir)
            if tiny
            else [f"paths.output_dir={out_dir or tmp_path / 'run'}", f"paths.cache_dir={cache_dir}"]
        )
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=[*base, *overrides])

    yield _compose
    GlobalHydra.instance().clear()
