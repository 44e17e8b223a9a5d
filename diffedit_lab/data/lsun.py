"""LSUN in its official export format: an LMDB environment mapping image ids to encoded webp/jpeg bytes.

Unpacking LSUN church (126k) or car (5.5M) into files is slow and wasteful, so the LMDB is read in place.
The environment is opened read-only without locks or readahead (safe on read-only and network file systems,
no page-cache thrash on random access), lazily, and once per process: LMDB refuses a second open of the same
files in one process, and a handle must not cross a ``fork`` into DataLoader workers, so handles live in one
registry per process that is emptied just before any fork (workers then open their own).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from diffedit_lab.data.images import check_image, open_bytes
from diffedit_lab.utils.errors import UserError

# Leading bytes of the encodings LSUN exports use (webp, jpeg) plus png, which re-exports often use.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF", b"BM", b"GIF8", b"II*\x00", b"MM\x00*")


_ENVS: dict[str, object] = {}
_ENVS_LOCK = threading.Lock()


def _open_shared_env(root: Path):
    """The process's read-only handle on the LMDB at ``root``, opened on first use."""
    import lmdb

    key = os.path.realpath(root)
    with _ENVS_LOCK:
        if key not in _ENVS:
            try:
                _ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=256)
            except lmdb.Error as exc:
                raise UserError(f"cannot open LMDB '{root}': {exc} (expected <root>/data.mdb)") from exc
        return _ENVS[key]


def close_all_envs() -> None:
    """Close every handle this process holds; the next read reopens lazily."""
    with _ENVS_LOCK:
        for env in _ENVS.values():
            env.close()
        _ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=close_all_envs)


def is_lmdb(path: str | os.PathLike) -> bool:
    """A folder is an LMDB environment when it holds ``data.mdb`` (what the LSUN zips unpack to)."""
    return (Path(path) / "data.mdb").is_file()


def _looks_like_image(head: bytes) -> bool:
    if head.startswith(b"RIFF"):
        return head[8:12] == b"WEBP"
    return head.startswith(_MAGIC)


class LmdbSource:
    """Images stored as values of an LMDB environment; keys are the LMDB keys decoded as UTF-8."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _open_env(self):
        return _open_shared_env(self.root)

    def keys(self) -> list[str]:
        env = self._open_env()
        with env.begin(write=False) as txn, txn.cursor() as cursor:
            raw = cursor.iternext(keys=True, values=False)
            return sorted(k.decode("utf-8", "surrogateescape") for k in raw)

    def _get(self, key: str) -> bytes | None:
        with self._open_env().begin(write=False) as txn:
            return txn.get(key.encode("utf-8", "surrogateescape"))

    def open(self, key: str) -> Image.Image:
        data = self._get(key)
        if data is None:
            raise KeyError(f"key '{key}' not in LMDB '{self.root}'")
        return open_bytes(data)

    def check(self, key: str, level: str) -> bool:
        """``header`` only reads the first bytes of the value through a zero-copy buffer, so checking
        millions of entries touches one page each instead of reading the whole database."""
        if level == "none":
            return True
        if level == "header":
            with self._open_env().begin(write=False, buffers=True) as txn:
                value = txn.get(key.encode("utf-8", "surrogateescape"))
                return value is not None and _looks_like_image(bytes(value[:16]))
        return check_image(lambda: self.open(key), level)

    def __repr__(self) -> str:
        return f"LmdbSource('{self.root}')"
