"""OmegaConf resolvers the config tree uses, registered when the package is imported (before Hydra composes).

``${stage:<key>}``: a value of the training stage whose callbacks are being built (see ``methods/stage.py``);
null outside a stage, e.g. in ``--cfg job --resolve``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from omegaconf import OmegaConf

_CURRENT: dict[str, Any] = {}


def _stage_value(key: str) -> Any:
    return _CURRENT.get(key)


@contextlib.contextmanager
def stage_scope(values: dict[str, Any]) -> Iterator[None]:
    """Make ``${stage:<key>}`` resolve to ``values[key]`` inside the block."""
    old = dict(_CURRENT)
    _CURRENT.clear()
    _CURRENT.update(values)
    try:
        yield
    finally:
        _CURRENT.clear()
        _CURRENT.update(old)


OmegaConf.register_new_resolver("stage", _stage_value, replace=True)
