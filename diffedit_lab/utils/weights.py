"""Weights in one place: safe loading of checkpoint files, and where a weight file comes from.

* :func:`load_weights` reads a PyTorch checkpoint (``torch.load(weights_only=True)``: tensors and plain containers
  only, never code) or a safetensors file; anything else — random bytes, a truncated archive, a pickle of
  arbitrary objects, a text file, a directory — is one line naming the file and what was expected.
* :func:`check_weights_file` is the start-up form: the file exists and its container is whole (no tensor read);
  :func:`load_state_into` loads a state dict into a module with a wrong layout/shape as one line naming the keys.
* :func:`offline_mode` is the project's one "no downloads" switch (``HF_HUB_OFFLINE``, read now, not at import).
* :func:`hf_cached_file` finds a Hugging Face Hub file in the local cache without touching the network.
* :func:`resolve_hub_file` finds a file that torchvision / torch-fidelity would download into the torch hub cache:
  explicit path → cache → download only when online; every miss is one line with the file, where to put it and
  the config key to set. :func:`torch_hub_checkpoints` then hands such files to a library that insists on
  resolving them itself (``torch.hub.load_state_dict_from_url``) without letting it download anything.
* :func:`missing_weights` is the standard message for weights that are neither local nor cached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import struct
import tempfile
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from diffedit_lab.utils.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_EXPECTED = "a tensor or state dict saved with torch.save, or a .safetensors file"
_ZIP_MAGIC = b"PK\x03\x04"
_TRUE = {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------- loading
def load_weights(path: str | os.PathLike, what: str = "weights", expected: str | None = None) -> Any:
    """Load a checkpoint safely: safetensors (a dict of tensors), or ``torch.load(weights_only=True)``.

    ``what`` names the weights in messages (``"SDD mapper"``), ``expected`` describes the content the caller
    wants (default: any tensor/state-dict file). A missing or unreadable file is a one-line :class:`UserError`
    naming both; nothing from torch's own error text (which suggests unsafe loading) reaches the user.
    """
    path = Path(path).expanduser()
    expected = expected or DEFAULT_EXPECTED
    if not path.exists():
        raise UserError(f"{what}: file not found: '{path}' (set the config to the local path of the file)")
    kind, problem = _sniff(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome is what counts
            warnings.simplefilter("ignore")
            if kind == "safetensors" or (kind is None and path.suffix == ".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu")
            if kind is not None:
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused something
        log.debug("%s: torch.load('%s') failed", what, path, exc_info=True)
        problem = _refused_pickle_reason(path, kind, exc)
    except Exception:  # truncated archive, corrupt safetensors header, ...
        log.debug("%s: loading '%s' failed", what, path, exc_info=True)
        problem = problem or _corrupt_reason(kind)
    raise UserError(
        f"{what}: '{path}' is not a readable PyTorch checkpoint or safetensors file ({problem}; expected {expected})"
    )


def check_weights_file(path: str | os.PathLike, what: str = "weights", expected: str | None = None) -> Path:
    """Start-up check of a weight file a later stage will load, without reading its tensors: it exists and its
    container is whole (a zip's central directory, a safetensors header that covers the file's length). The same
    one-line :class:`UserError` as :func:`load_weights`; folders (diffusers models) pass through."""
    path = Path(path).expanduser()
    expected = expected or DEFAULT_EXPECTED
    if not path.exists():
        raise UserError(f"{what}: file not found: '{path}' (set the config to the local path of the file)")
    if path.is_dir():
        return path
    kind, problem = _sniff(path)
    if kind == "zip":
        problem = _zip_problem(path)
    elif kind == "safetensors":
        problem = _safetensors_problem(path)
    if problem is not None:
        raise UserError(
            f"{what}: '{path}' is not a readable PyTorch checkpoint or safetensors file ({problem}; "
            f"expected {expected})"
        )
    return path


def _zip_problem(path: Path) -> str | None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return _corrupt_reason("zip")
    if not any(n.endswith("data.pkl") for n in names):
        return "it is a zip archive that torch.save did not write"
    return None


def _safetensors_problem(path: Path) -> str | None:
    import json

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, OSError, struct.error):
        return _corrupt_reason("safetensors")
    return None if 8 + n + end <= path.stat().st_size else _corrupt_reason("safetensors")


def load_state_into(
    module: torch.nn.Module,
    state: Any,
    path: str | os.PathLike,
    what: str,
    prefix: str = "",
) -> None:
    """``module.load_state_dict`` (strict) of the ``prefix``-ed entries of ``state`` (a state dict, or a Lightning
    checkpoint holding one under ``state_dict``), with a wrong layout or shape as ONE line naming the file, what
    was expected and the keys that differ — never a traceback."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = type(state).__name__ if not isinstance(state, dict) else "dict of non-tensors"
        raise UserError(f"{what}: '{path}' holds a {kind}, expected a state dict of {type(module).__name__}")
    mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(mine))
    unexpected = sorted(set(mine) - set(own))
    if missing or unexpected or not mine:
        raise UserError(
            f"{what}: '{path}' does not have the expected layout ({len(own)} tensors"
            + (f" under '{prefix}'" if prefix else "")
            + f"): missing {_few(missing)}, unexpected {_few(unexpected)}"
        )
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mine.items() if v.shape != own[k].shape]
    if wrong:
        raise UserError(f"{what}: '{path}' does not match the model's shapes (file vs model): {_few(wrong)}")
    module.load_state_dict(mine, strict=True)


def _few(items: list[str], n: int = 3) -> str:
    return "[" + ", ".join(items[:n]) + (f", … {len(items) - n} more" if len(items) > n else "") + "]"


def _sniff(path: Path) -> tuple[str | None, str | None]:
    """(``zip``/``pickle``/``safetensors`` or None, why it is unreadable when that is clear from the bytes)."""
    if path.is_dir():
        return None, "it is a directory"
    if not path.is_file():
        return None, "it is not a regular file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return None, f"it cannot be opened: {exc.strerror or type(exc).__name__}"
    if size == 0:
        return None, "the file is empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip", None
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 8 + header_len <= size and head[8:9] == b"{":
            return "safetensors", None
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # pickle protocol 2-5: torch's legacy (non-zip) format
        return "pickle", None
    if _looks_like_text(head):
        return None, "it is a text file"
    return None, "its bytes are not in a known checkpoint format"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # the 512-byte window may cut a multi-byte character at its end
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\r\n\t\f" for c in text)


def _refused_pickle_reason(path: Path, kind: str | None, exc: Exception) -> str:
    """Why the weights-only unpickler refused the file: arbitrary Python objects (named when possible), a plain
    pickle instead of torch.save's format, or damaged data."""
    names: list[str] = []
    if kind == "zip":
        with contextlib.suppress(Exception):
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        if not names:
            return _corrupt_reason(kind)
    else:
        message = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+) was not an allowed global", message)
        if found and not found.group(1).startswith("torch."):
            names = [found.group(1)]
        elif found or "Unsupported operand" not in message:
            return _corrupt_reason(kind)  # e.g. a truncated legacy file cut inside a torch global's name
        else:
            return "it is pickle data that torch.save did not write (e.g. pickle.dump); save tensors with torch.save"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (
        f"it pickles Python objects other than tensors and plain containers ({shown}), which are never unpickled "
        "because unpickling can run code; re-save only the tensors, e.g. torch.save(model.state_dict(), path)"
    )


def _corrupt_reason(kind: str | None) -> str:
    if kind == "zip":
        return "the archive is truncated, corrupt or not written by torch.save"
    if kind == "safetensors":
        return "the safetensors data is truncated or corrupt"
    if kind == "pickle":
        return "the pickle data is truncated or corrupt"
    return "the file is corrupt"


# --------------------------------------------------------------------------------------------- sources
def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE is set now: huggingface_hub reads it only at import, too early for launchers
    and tests that set it later."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def missing_weights(what: str, source: str, hint: str = "") -> UserError:
    """The standard message for weights that cannot be found locally or on the hub (offline runs)."""
    msg = f"cannot load {what} from '{source}': not a local path and not in the Hugging Face cache"
    msg += " (offline? set HF_HUB_OFFLINE=0 with network, or point the config at a local copy)"
    if hint:
        msg += f"; {hint}"
    return UserError(msg)


def hf_cached_file(
    repo_id: str,
    filenames: str | Iterable[str],
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
) -> str | None:
    """Local path of the first of ``filenames`` already in the Hugging Face cache for ``repo_id``, else None.

    Only looks at the cache (no network, no lock files), whatever HF_HUB_OFFLINE says.
    """
    from huggingface_hub import try_to_load_from_cache

    for name in [filenames] if isinstance(filenames, str) else filenames:
        try:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)
        except Exception:  # malformed repo id etc.: treat as not cached
            continue
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def hub_cache_path(filename: str) -> Path:
    """Where torch.hub keeps a downloaded checkpoint (``$TORCH_HOME/hub/checkpoints/<filename>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_hub_file(what: str, filename: str, url: str, path: str | os.PathLike | None, config_key: str) -> Path:
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
    from diffedit_lab.utils.io import atomic_write

    try:
        with urllib.request.urlopen(url, timeout=30) as response:

            def _write(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(response, f)

            atomic_write(cached, _write)
    except OSError as exc:
        raise UserError(f"{what}: cannot download '{url}' ({exc}); {advice}") from exc
    return cached


@contextlib.contextmanager
def torch_hub_checkpoints(files: Mapping[str, str | os.PathLike]) -> Iterator[Path]:
    """Within the block, torch.hub's cache is a temporary folder holding exactly ``files`` (checkpoint name →
    local path, linked), so code calling ``torch.hub.load_state_dict_from_url`` (torchvision's ``weights=``)
    finds them there and never downloads; the previous torch.hub setting is restored afterwards."""
    previous = getattr(torch.hub, "_hub_dir", None)  # None: torch.hub follows $TORCH_HOME (keep it that way)
    with tempfile.TemporaryDirectory(prefix="diffedit_hub_") as tmp:
        folder = Path(tmp) / "checkpoints"
        folder.mkdir()
        for name, source in files.items():
            target = folder / name
            try:
                target.symlink_to(Path(source).expanduser().resolve())
            except OSError:  # no symlinks on this file system
                shutil.copyfile(Path(source).expanduser(), target)
        torch.hub.set_dir(tmp)
        try:
            yield Path(tmp)
        finally:
            torch.hub._hub_dir = previous
