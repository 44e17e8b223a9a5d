"""``hydra.utils.instantiate`` that lets a :class:`UserError` through unwrapped (Hydra wraps every exception
raised by a ``_target_`` in ``InstantiationException``, which would turn a one-line message into a traceback)."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException

from diffedit_lab.utils.errors import UserError


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(config, *args, **kwargs)
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, UserError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise
