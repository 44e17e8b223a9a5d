"""Typed configs: plain dataclasses checked once at start-up, before any model is built.

A method (or any other configurable part) declares its options as nested ``@dataclass`` types. ``validate``
turns the composed Hydra node into an instance of that dataclass, checking every value against its annotation
(``int``, ``float``, ``bool``, ``str``, ``X | None``, ``list[X]``, ``dict[str, X]``, ``Literal[...]``, nested
dataclasses, ``Any``; a float must be finite) and the field's declared bounds (``field(metadata=bounds(ge=1))``)
or path rule (``field(metadata=existing())``: the file must exist when set), then calls the dataclass's
``check()`` for rules that span several fields. A key missing from the node is an error unless its
field has a default (method schemas have none: their YAML states every default, see ``methods/config.py``). Every
failure is one line naming the full key, the value and what is allowed: ``method.fit.steps='abc': expected an
integer``.

Why not OmegaConf structured configs alone: they know neither ``Literal`` choices nor ranges, and their errors
are multi-line. Unknown keys are still refused by Hydra's struct mode at composition.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from diffedit_lab.utils.errors import UserError


class ConfigError(UserError):
    """A config value outside what its schema allows; the message is ``<key>=<value>: <what is allowed>``."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def bounds(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None):
    """Field metadata for a numeric range: ``steps: int = field(metadata=bounds(ge=1))``."""
    return {"bounds": {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}}


def existing(kind: Literal["file", "folder"] = "file"):
    """Field metadata for a path that must exist when set (null or empty = unset):
    ``fid_weights_path: str | None = field(metadata=existing())`` — a typo stops at start-up, not when the stage
    that reads it finally runs (or, worse, silently skips what needed it)."""
    return {"exists": kind}


def validate(schema: type, node: Any, key: str) -> Any:
    """Check ``node`` (DictConfig or dict) against the dataclass ``schema``; return the schema instance."""
    if isinstance(node, DictConfig | ListConfig):
        try:
            node = OmegaConf.to_container(node, resolve=True)
        except Exception as exc:  # an interpolation that cannot resolve
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"{key}: cannot resolve the config: {first}") from None
    return _convert(schema, node, key)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(key, value, f"expected {_describe(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, value, f"expected one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, value, "expected a mapping")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, value, "expected an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan passes no comparison and inf every lower bound: refuse both here
                raise ConfigError(key, value, "expected a finite number")
            return float(value)
        raise ConfigError(key, value, "expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric prompt; YAML would otherwise surprise users
        raise ConfigError(key, value, "expected a string")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, value, f"expected {_describe(tp)}")
        item = args[0] if args else Any
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, "expected a mapping")
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"schema type {tp!r} of '{key}' is not supported")  # a programming error, not user input


def _build(schema: type, values: dict, key: str) -> Any:
    hints = typing.get_type_hints(schema)
    names = {f.name: f for f in dataclasses.fields(schema)}
    aliases = {f.metadata.get("key", f.name): f.name for f in names.values()}  # e.g. `_target_` → target
    unknown = [k for k in values if k not in aliases]
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", values[unknown[0]], f"unknown key; {key} has {sorted(aliases)}")
    kwargs = {}
    for cfg_key, name in aliases.items():
        f = names[name]
        full = f"{key}.{cfg_key}"
        if cfg_key not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(full, None, "missing: this key is required")
            continue
        val = _convert(hints[name], values[cfg_key], full)
        _check_bounds(full, val, f.metadata.get("bounds"))
        _check_exists(full, val, f.metadata.get("exists"))
        kwargs[name] = val
    obj = schema(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(key)
    return obj


def _check_bounds(key: str, value: Any, rule: dict | None) -> None:
    if not rule or value is None:
        return
    items = value if isinstance(value, list) else [value]
    for v in items:
        if not isinstance(v, int | float):
            continue
        ok = (
            ("ge" not in rule or v >= rule["ge"])
            and ("gt" not in rule or v > rule["gt"])
            and ("le" not in rule or v <= rule["le"])
            and ("lt" not in rule or v < rule["lt"])
        )
        if not ok:
            text = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}"}
            allowed = " and ".join(text[k].format(b) for k, b in rule.items())
            raise ConfigError(key, value, f"expected a value {allowed}")


def _check_exists(key: str, value: Any, kind: str | None) -> None:
    if not kind or not isinstance(value, str) or not value:
        return
    path = Path(value).expanduser()
    if not (path.is_file() if kind == "file" else path.is_dir()):
        raise ConfigError(key, value, f"no such {kind}")


def as_dict(obj: Any) -> Any:
    """A schema instance back to plain containers (config keys, e.g. ``_target_``), for checkpoints and logs."""
    if dataclasses.is_dataclass(obj):
        return {f.metadata.get("key", f.name): as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [as_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj


def target(name: str = "_target_"):
    """A (required) dataclass field holding a Hydra key with leading underscores (``_target_``)."""
    return dataclasses.field(metadata={"key": name})
