"""Compose the project's Hydra config from Python (notebooks, benchmarks, tests) exactly as the CLI would."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def method_settings(schema: type, method: str, key: str = "", /, **overrides: Any) -> Any:
    """One section of a method's config from Python (tests, benchmarks, notebooks), as the CLI composes it:
    ``method=<method>``'s ``key`` node (``""``: the whole ``method``) with ``overrides`` on top, checked against
    ``schema``. ``conf/method/<method>.yaml`` is the one place defaults live (the schemas type and bound every key
    but state no default), so a caller that wants "the defaults but λ = 0" writes
    ``method_settings(LossConfig, "sdft", "loss", lambda_distill=0.0)`` instead of restating them."""
    import copy

    from diffedit_lab.utils.schema import validate

    node = copy.deepcopy(_method_node(method, key))  # the cached node stays as composed
    return validate(schema, {**node, **overrides}, ".".join(filter(None, ("method", key))))


@functools.cache
def _method_node(method: str, key: str) -> dict:
    import tempfile

    from omegaconf import OmegaConf

    cfg = compose_config([f"method={method}", f"paths.output_dir={tempfile.gettempdir()}/diffedit_lab_settings"])
    node = OmegaConf.select(cfg.method, key) if key else cfg.method
    return OmegaConf.to_container(node, resolve=True)
