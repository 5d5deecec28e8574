"""The one exception type users see, and the checks that raise it.

Every expected user mistake (bad argument, bad data) raises :class:`OTReweightError`, a
``ValueError`` whose message is one line naming what is wrong and what to do. The command
line catches it and prints that line alone.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np
import torch

MIN_TORCH = (2, 1)


class OTReweightError(ValueError):
    """A user-facing error: one line that says what is wrong and what to do."""


def check_torch_version(version: str) -> None:
    """Raise if the installed torch is older than :data:`MIN_TORCH`."""
    parts = []
    for tok in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in tok if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < MIN_TORCH:
        raise OTReweightError(
            f"torch {version} is too old: otreweight needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}; "
            "upgrade it with `pip install -U 'torch>=2.1'`"
        )


def is_number(value, low: float | None = None, above: float | None = None) -> bool:
    """Whether ``value`` is a finite real number (not a bool), ``>= low`` and ``> above`` where given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return False
    return (low is None or value >= low) and (above is None or value > above)


def check_positive(name: str, value: float, hint: str = "") -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise OTReweightError(f"{name} must be a number > 0, got {value!r}{hint}") from None
    if not math.isfinite(v) or v <= 0:
        raise OTReweightError(f"{name} must be a finite number > 0, got {value!r}{hint}")
    return v


def check_finite(name: str, x) -> None:
    """Raise if an array or tensor holds NaN or inf."""
    if isinstance(x, torch.Tensor):
        ok = bool(torch.isfinite(x).all()) if x.is_floating_point() else True
    else:
        arr = np.asarray(x)
        ok = bool(np.isfinite(arr).all()) if np.issubdtype(arr.dtype, np.floating) else True
    if not ok:
        raise OTReweightError(
            f"{name} contains NaN or inf values; clean or impute them before training"
        )


def check_labels(name: str, y, num_classes: int | None = None) -> int:
    """Check integer labels in ``0..K-1`` and return ``K``.

    With ``num_classes`` given, every label must be below it; without, ``K = max(y) + 1``.
    """
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise OTReweightError(f"{name} must be a 1-d array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)):
            raise OTReweightError(f"{name} must hold integer class indices 0..K-1, got dtype {arr.dtype}")
    if arr.size == 0:
        return int(num_classes or 0)
    lo, hi = int(arr.min()), int(arr.max())
    if num_classes is None and hi >= 1_000_000 and hi >= 100 * arr.size:
        raise OTReweightError(f"{name} go up to {hi} for only {arr.size} examples; map your labels to 0..K-1 first "
                              "(e.g. sklearn.preprocessing.LabelEncoder)")
    k = int(num_classes) if num_classes is not None else hi + 1
    if lo < 0 or hi >= k:
        raise OTReweightError(
            f"{name} must lie in 0..{k - 1} (K={k} classes), found values in {lo}..{hi}; "
            "map your labels to 0..K-1 first (e.g. sklearn.preprocessing.LabelEncoder)"
        )
    return k


def check_choice(kind: str, name: str, options: Iterable[str]) -> str:
    """Raise if ``name`` is not among ``options``."""
    options = sorted(options)
    if name not in options:
        raise OTReweightError(f"unknown {kind} {name!r}; choose one of: {', '.join(options)}")
    return name


def check_same_length(**arrays) -> int:
    """Raise unless all given arrays have the same first dimension; return it."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise OTReweightError(f"length mismatch: {desc}; every array needs one row per example")
    return next(iter(lengths.values())) if lengths else 0
