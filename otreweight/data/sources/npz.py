"""Arrays saved with :func:`numpy.savez`, registered as the path source ``"npz"``.

``load_dataset("npz:<path>")``, or a plain path ending in ``.npz`` (asked first).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from .arrays import _ARRAY_KEYS, ArrayDataset, DataError
from .registry import register_source

__all__ = ["load_npz"]


def load_npz(path) -> ArrayDataset:
    """Load arrays saved with ``np.savez``.

    Parameters
    ----------
    path : path
        ``.npz`` with keys ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
        optionally ``classes`` (str array). Without ``classes`` the names are
        ``"0" .. "K-1"`` with ``K = max label + 1``.

    Returns
    -------
    ArrayDataset

    Raises
    ------
    DataError
        Missing file or keys, object arrays, or invalid arrays.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise DataError(f"{path} does not exist: give an .npz with x_train, y_train, x_test, y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _ARRAY_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} lacks keys {', '.join(missing)}: save x_train, y_train, x_test, "
                                "y_test (and optionally classes) with np.savez")
            arrays = {k: z[k] for k in _ARRAY_KEYS}
            classes = z["classes"] if "classes" in z.files else None
    except DataError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{path} holds object arrays: save plain arrays, and classes as a str array "
                            "(np.array(names, dtype=str))") from None
        raise DataError(f"cannot read {path} ({e}): save it again with np.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read {path} ({e}): save it again with np.savez") from None
    try:
        if classes is None:
            ys = [np.asarray(arrays[k]) for k in ("y_train", "y_test")]
            k = max((int(y.max()) for y in ys if y.size and y.dtype.kind in "iub"), default=0) + 1
            n = sum(int(y.size) for y in ys)
            if k > 1_000_000 and k > 100 * n:
                raise DataError(f"labels go up to {k - 1} for only {n} examples: map them to 0..K-1 first, "
                                "or save the class names as classes")
            classes = [str(i) for i in range(k)]
        else:
            classes = [str(c) for c in np.asarray(classes).reshape(-1)]
        return ArrayDataset(classes=classes, name=f"npz:{path}", **arrays)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def _is_npz(path: Path) -> bool:
    """A path ending in ``.npz`` (existing or not: a missing file is the loader's error)."""
    return str(path).lower().endswith(".npz")


@register_source("npz", sniff=_is_npz, order=10, what="a .npz file")
def _npz(root, download=True, cache_dir=None):
    """An ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (images ``(N, H, W, C)`` uint8 or features ``(N, D)``)."""
    return load_npz(root)
