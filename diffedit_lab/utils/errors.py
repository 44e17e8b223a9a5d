"""User-facing errors: one clear line and a non-zero exit instead of a traceback."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A problem with the user's input, config, data or weights.

    The entry point prints ``error: <message>`` on one line and exits with code 2, so the message must say
    what was wrong and what to provide instead (a path, a layout, a config key).
    """


def __getattr__(name: str) -> Any:
    """``missing_weights`` lives in :mod:`diffedit_lab.utils.weights`; this alias keeps old imports working."""
    if name == "missing_weights":
        from diffedit_lab.utils.weights import missing_weights

        return missing_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
