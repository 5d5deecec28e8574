"""Cache of decoded arrays: one uncompressed ``.npz`` per source, keyed by a fingerprint of its files."""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ...utils import atomic_write
from .arrays import _ARRAY_KEYS, ArrayDataset

__all__ = ["default_cache_dir"]

_CACHE_VERSION = "otreweight-arrays-v1"


def default_cache_dir() -> Path:
    """Cache directory: ``$OTREWEIGHT_CACHE`` or ``~/.cache/otreweight``."""
    env = os.environ.get("OTREWEIGHT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "otreweight"


def _resolve_cache_dir(cache_dir) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _fingerprint(path: Path) -> list:
    """Absolute path, size and mtime of a file, or of every file in a folder."""
    st = path.stat()
    if not path.is_dir():
        return [str(path), st.st_size, st.st_mtime_ns]
    rows = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for fname in sorted(filenames):
            try:
                fst = os.stat(os.path.join(dirpath, fname))
            except OSError:  # a dangling symlink or a symlink loop: skipped, as the listing skips it
                continue
            rows.append([os.path.relpath(os.path.join(dirpath, fname), path), fst.st_size, fst.st_mtime_ns])
    return [str(path), rows]


def _cache_path(cache_dir: Path, prefix: str, *parts) -> Path:
    digest = hashlib.sha256(repr((_CACHE_VERSION,) + parts).encode()).hexdigest()[:20]
    return cache_dir / f"{prefix}-{digest}.npz"


def _read_cache(path: Path, make=ArrayDataset, version: str = _CACHE_VERSION, errors: tuple = ()):
    """The cached dataset (``make(x_train=..., y_train=..., x_test=..., y_test=..., classes=...,
    name=...)``), or None when absent, of another ``version`` or unreadable (then rebuilt);
    ``errors``: further exceptions of ``make`` that mark an entry as unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["version"]) != version:
                return None
            arrays = {k: z[k] for k in _ARRAY_KEYS}
            return make(classes=list(z["classes"]), name=str(z["name"]), **arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, *errors):
        return None


def _write_cache(path: Path, ds, version: str = _CACHE_VERSION,
                 redo: str = "data will be decoded again next time") -> None:
    """Write ``ds``'s arrays, classes and name atomically (temp file + rename); warn if not possible."""
    arrays = {k: getattr(ds, k) for k in _ARRAY_KEYS}
    try:
        atomic_write(path, lambda f: np.savez(
            f, version=np.array(version), name=np.array(ds.name), classes=np.array(ds.classes, dtype=str), **arrays
        ))
    except OSError as e:
        warnings.warn(f"could not write the data cache {path} ({e}); {redo}")
