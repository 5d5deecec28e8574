"""The dataset container every source returns, :class:`ArrayDataset`, and :class:`DataError`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._errors import OTReweightError

__all__ = ["ArrayDataset", "DataError"]

_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(OTReweightError):
    """A data source is missing, damaged or malformed (one-line message)."""



class ArraySplits:
    """``split("train" | "test")`` and ``num_classes`` of a source holding ``x_train`` / ``y_train`` /
    ``x_test`` / ``y_test`` arrays, ``classes`` and a ``modality``."""

    def split(self, which: str):
        """The ``"train"`` or ``"test"`` split as an :class:`~otreweight.data.dataset.ArraySplit`."""
        from ..dataset import ArraySplit

        if which not in ("train", "test"):
            raise DataError(f"unknown split {which!r}; use train or test")
        return ArraySplit(getattr(self, f"x_{which}"), getattr(self, f"y_{which}"), self.classes, self.modality)

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (``len(classes)``)."""
        return len(self.classes)


@dataclass
class ArrayDataset(ArraySplits):
    """A labelled train/test pair of arrays, as loaded from a source.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        Images as uint8 of shape ``(N, H, W, C)`` (channels last, as stored),
        or features as numbers of shape ``(N, D)``.
    y_train, y_test : np.ndarray
        int64 labels in ``0..K-1``.
    classes : list of str
        Class names; ``classes[k]`` names label ``k``.
    name : str
        Where the data came from, e.g. ``"cifar10"`` or ``"folder:<path>"``.

    Raises
    ------
    DataError
        On construction, when the arrays are inconsistent (see ``validate``).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.validate()

    @property
    def modality(self) -> str:
        """``"image"`` for uint8 ``(N, H, W, C)`` arrays, ``"vector"`` for ``(N, D)`` features: the
        one place the kind of in-memory inputs is read off their shape (``validate`` allows only these)."""
        return "image" if self.x_train.ndim == 4 else "vector"

    def validate(self) -> None:
        """Check shapes, dtypes and label ranges; labels become int64.

        Raises
        ------
        DataError
            With one line naming the problem and the fix.
        """
        if not self.classes:
            raise DataError("the dataset has no classes: give at least one class name")
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise DataError(f"class names repeat ({', '.join(dup)}): give each class one unique name")
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"))
            y = _check_labels(getattr(self, f"y_{split}"), f"y_{split}", self.num_classes)
            _check_inputs(x, f"x_{split}")
            if len(x) != len(y):
                raise DataError(
                    f"x_{split} has {len(x)} rows but y_{split} has {len(y)}: "
                    "give exactly one label per example"
                )
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
        if len(self.x_train) == 0:
            raise DataError("the training split is empty: the source needs at least one training example")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"x_train examples have shape {self.x_train.shape[1:]} but x_test examples "
                f"{self.x_test.shape[1:]}: both splits need the same example shape"
            )


def _check_labels(y, what: str, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}: labels must be a 1-D array of class indices")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "b" or y.size == 0:
            y = y.astype(np.int64)
        else:
            raise DataError(
                f"{what} has dtype {y.dtype}: labels must be integers 0..K-1 "
                "(convert with .astype(np.int64))"
            )
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(
                f"{what} has label {bad} outside 0..{num_classes - 1} ({num_classes} classes): "
                "labels must be 0..K-1 with K = number of class names"
            )
    return y.astype(np.int64, copy=False)


def _check_inputs(x: np.ndarray, what: str) -> None:
    if x.ndim == 4:
        if x.dtype != np.uint8:
            raise DataError(
                f"{what} holds images of dtype {x.dtype}: store images as uint8 (N, H, W, C), "
                "e.g. np.clip(x, 0, 255).astype(np.uint8), or flatten them to float features (N, D)"
            )
        return
    if x.ndim != 2:
        raise DataError(
            f"{what} has shape {x.shape}: expected uint8 images (N, H, W, C) or features (N, D)"
            + (" (add a channel axis with x[..., None])" if x.ndim == 3 else "")
        )
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} has dtype {x.dtype}: features must be numbers")
    if x.dtype.kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(
                f"{what} has {bad} non-finite values (NaN or inf): remove or impute them before loading"
            )
