"""The dataset protocol every split implements, and the splits built from arrays and subsets.

A split is anything with

* ``labels`` - int64 array ``(N,)`` of class indices ``0..K-1`` (read without touching inputs, so a
  long-tailed split of millions of files is drawn from labels alone);
* ``classes`` - the ``K`` class names;
* ``modality`` - the name of its :mod:`~otreweight.data.modalities` (``image``, ``vector``, ...);
* ``__len__`` and ``__getitem__(i) -> (raw inputs, label)`` - one example, as stored (e.g. uint8
  ``(H, W, C)``); decoding happens here, so in a loader worker on the stream path.

Splits that hold their inputs as one array also offer ``arrays() -> (x, y)``: the in-memory path
of :func:`otreweight.data.loaders.build_loader` normalises them once onto the device.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Dataset(Protocol):
    labels: np.ndarray
    classes: list
    modality: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int): ...


class ArraySplit:
    """A split held as arrays ``x`` (N, ...) and ``y`` (N,)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes, modality: str) -> None:
        self.x, self.labels = x, np.asarray(y, dtype=np.int64)
        self.classes, self.modality = list(classes), modality

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        return self.x[i], int(self.labels[i])

    def __getitems__(self, idx: list):  # batched fetch (torch DataLoader calls it when present)
        return list(zip(self.x[np.asarray(idx, dtype=np.int64)], self.labels[np.asarray(idx, dtype=np.int64)]))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x, self.labels

    @property
    def example_shape(self) -> tuple:
        return tuple(self.x.shape[1:])


class Subset:
    """The examples ``indices`` of ``base`` (lazy: nothing is read until an example is asked for)."""

    def __init__(self, base, indices) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(base.labels)[self.indices]
        self.classes, self.modality = base.classes, base.modality

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]

    def read(self, i: int):
        """The base's ``read`` (decode without its same-size check) where it has one."""
        read = getattr(self.base, "read", None)
        return read(int(self.indices[i])) if read is not None else self.base[int(self.indices[i])]

    def __getitems__(self, idx: list):
        inner = [int(self.indices[i]) for i in idx]
        if hasattr(self.base, "__getitems__"):
            return self.base.__getitems__(inner)
        return [self.base[j] for j in inner]

    def arrays(self):
        if not hasattr(self.base, "arrays"):
            raise AttributeError("arrays")
        x, y = self.base.arrays()
        return x[self.indices], y[self.indices]

    @property
    def example_shape(self) -> tuple:
        return example_shape(self.base)


def has_arrays(split) -> bool:
    """Whether ``split`` holds its inputs as one array (``arrays()`` works without decoding)."""
    if isinstance(split, Subset):
        return has_arrays(split.base)
    return hasattr(split, "arrays")


def example_shape(split) -> tuple:
    """The shape of one raw example of ``split``."""
    shape = getattr(split, "example_shape", None)
    if shape is not None and not callable(shape):
        return tuple(shape)
    return tuple(np.shape(split[0][0]))


def subset(split, indices):
    """The examples ``indices`` of ``split``: an :class:`ArraySplit` of arrays, else a :class:`Subset`."""
    if isinstance(split, ArraySplit):
        idx = np.asarray(indices, dtype=np.int64)
        return ArraySplit(split.x[idx], split.labels[idx], split.classes, split.modality)
    return Subset(split, indices)


def fingerprint(*splits) -> str:
    """A short digest of splits: their labels, class names and a sample of up to 256 examples' raw
    inputs (arrays) or item names (lazy sources) - enough to notice data replaced under a run."""
    import hashlib

    h = hashlib.sha256()
    for split in splits:
        labels = np.ascontiguousarray(np.asarray(split.labels, dtype=np.int64))
        h.update(labels.tobytes())
        h.update(repr(list(split.classes)).encode())
        n = len(split)
        idx = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, 256)).astype(np.int64)) if n else []
        if has_arrays(split):
            x = split.arrays()[0]
            sample = x[idx]
            h.update(repr(sample.tolist()).encode() if sample.dtype == object else np.ascontiguousarray(sample).tobytes())
        else:
            names = getattr(split, "names", None) or getattr(getattr(split, "base", None), "names", None)
            h.update(repr(names if names is not None else n).encode())
    return h.hexdigest()[:16]


__all__ = ["ArraySplit", "Dataset", "Subset", "example_shape", "fingerprint", "has_arrays", "subset"]
