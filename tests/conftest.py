"""Shared fixtures: compose the REAL Hydra config and shrink it to tiny, CPU, offline runs."""

from __future__ import annotations

import os
from pathlib import Path

import lightning  # noqa: F401  (imported here, its log handler binds to the real stderr, not a test's capture)
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
    from diffedit_lab.utils.config import compose_config

    def _compose(*overrides: str, tiny: bool = True, out_dir: Path | None = None):
        out = out_dir or tmp_path / "run"
        base = tiny_overrides(out, cache_dir) if tiny else [f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}"]
        return compose_config([*base, *overrides], config_dir=CONF)

    return _compose
