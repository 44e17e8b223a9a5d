"""Trained artifacts in one format: a safetensors file whose header carries a small JSON config.

    save_artifact(run_dir / "mapper.safetensors", mapper.state_dict(), {"prompt": "angry", "levels": [...]})
    art = load_artifact(path, "SDD mapper")          # art.state (tensors), art.config (dict), art.kind

One file, so it is written atomically like every export (temporary file, then rename); safetensors, so loading
it can never run code and needs no pickle allow-list; the config (what the weights were trained with: prompt,
layer list, selection, …) sits in the header's ``__metadata__`` under ``"diffedit_lab"``, readable without reading
a tensor (:func:`read_artifact_config`).

Exports written before this format still load: a ``torch.save`` dict (``{"state_dict": …, <meta>}`` or the
method's own key, e.g. SDD's ``{"mapper": …}``) gives ``kind="legacy"`` and its non-tensor entries as the config;
a Lightning checkpoint gives ``kind="checkpoint"`` with its ``state_dict`` (keys prefixed by the module's
attribute names) and the whole checkpoint dict minus the state as the config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_write
from diffedit_lab.utils.weights import load_weights

CONFIG_KEY = "diffedit_lab"
SUFFIX = ".safetensors"


@dataclass
class Artifact:
    """Weights and what they were trained with. ``kind``: ``artifact`` (this format), ``legacy`` (an old
    ``torch.save`` export) or ``checkpoint`` (a Lightning checkpoint)."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    kind: str = "artifact"


def save_artifact(path: str | os.PathLike, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write ``state`` (tensors) and ``config`` (JSON-serialisable) to ``path`` atomically. Tensors that share
    storage (tied weights, views) are copied, as safetensors stores each tensor once."""
    from safetensors.torch import save_file

    try:
        text = json.dumps(config, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"artifact config for {path} is not JSON-serialisable: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"artifact state entry {key!r} is a {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu")
        storage = t.untyped_storage()
        whole = t.is_contiguous() and t.storage_offset() == 0 and t.numel() * t.element_size() == storage.nbytes()
        tensors[key] = t if whole and storage.data_ptr() not in seen else t.contiguous().clone()
        if t.numel():
            seen.add(storage.data_ptr())
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", CONFIG_KEY: text}))


def read_artifact_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The config in an artifact's header (no tensor read); None for files of another format."""
    path = Path(path)
    if path.suffix != SUFFIX:
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # damaged header: load_artifact says so in one line
        return None
    text = meta.get(CONFIG_KEY)
    return json.loads(text) if text else {}


def load_artifact(
    path: str | os.PathLike, what: str, expected: str | None = None, legacy_state_key: str = "state_dict"
) -> Artifact:
    """Load an artifact, an old ``torch.save`` export or a Lightning checkpoint (safely, see
    :func:`~diffedit_lab.utils.weights.load_weights`). ``legacy_state_key``: where an old export kept its tensors
    (``"state_dict"``; SDD's ``mapper.pt``: ``"mapper"``)."""
    path = Path(path).expanduser()
    obj = load_weights(path, what, expected)
    config = read_artifact_config(path)
    if config is not None:
        return Artifact(dict(obj), config, "artifact")
    if not isinstance(obj, dict):
        raise UserError(f"{what}: '{path}' holds a {type(obj).__name__}, not a state dict ({expected or ''})")
    if "pytorch-lightning_version" in obj or ("state_dict" in obj and "hyper_parameters" in obj):
        rest = {k: v for k, v in obj.items() if k != "state_dict"}
        return Artifact(dict(obj.get("state_dict") or {}), rest, "checkpoint")
    if isinstance(obj.get(legacy_state_key), dict):
        rest = {k: v for k, v in obj.items() if k != legacy_state_key}
        return Artifact(dict(obj[legacy_state_key]), rest, "legacy")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):  # a bare state dict
        return Artifact(dict(obj), {}, "legacy")
    raise UserError(f"{what}: '{path}' is neither an export of this project nor a Lightning checkpoint")
