"""Locate weights that torchvision / torch-fidelity would download into the torch hub cache.

Those libraries download silently on first use; on an offline compute node that is a hang or a deep
traceback. Resolving the file here first (explicit path → torch hub cache → download only when online)
turns every miss into one line naming the file, where to put it, and the config key to set.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import torch

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_write


def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE is set now (the project's one "no downloads" switch)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return env in {"1", "true", "yes", "on"} or bool(constants.HF_HUB_OFFLINE)


def hub_cache_path(filename: str) -> Path:
    """Where torch.hub keeps a downloaded checkpoint (``$TORCH_HOME/hub/checkpoints/<filename>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_hub_file(what: str, filename: str, url: str, path: str | None, config_key: str) -> Path:
    """Local path of ``filename``: ``path`` if given, else the torch hub cache, else a download if online."""
    if path:
        local = Path(path).expanduser()
        if not local.is_file():
            raise UserError(f"{what}: file not found: '{local}' (set {config_key} to a local copy of {url})")
        return local
    cached = hub_cache_path(filename)
    if cached.is_file():
        return cached
    advice = f"download {url} and set {config_key}=<path>, or copy it to '{cached}'"
    if offline_mode():
        raise UserError(f"{what}: '{filename}' is not in the torch hub cache and HF_HUB_OFFLINE is set; {advice}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:

            def _write(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(response, f)

            atomic_write(cached, _write)
    except OSError as exc:
        raise UserError(f"{what}: cannot download '{url}' ({exc}); {advice}") from exc
    return cached
