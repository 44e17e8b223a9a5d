"""Compose the project's Hydra config from Python (notebooks, benchmarks, tests) exactly as the CLI would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the one place the config tree is located


def compose_config(overrides: Sequence[str] = (), config_dir: str | Path = CONF_DIR) -> DictConfig:
    """``conf/config.yaml`` + ``overrides``. ``paths.output_dir`` is a Hydra runtime value: override it
    (e.g. ``paths.output_dir=/tmp/run``) before resolving the config outside ``python -m diffedit_lab``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def compose_nested(overrides: Sequence[str]) -> DictConfig:
    """The root config with ``overrides`` for a run nested in another (a comparison's entries, SDFT's Asyrp edits):
    through the running app's Hydra instance when there is one (its search path, its ``hydra.*``), else from scratch."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose

        return compose(config_name="config", overrides=list(overrides))
    return compose_config(overrides)
