"""Loaders: how a split's inputs reach the training device, for data that fits and data that does not.

Both kinds serve the loop through one narrow interface, the :class:`Loader` protocol:

* ``labels`` - ``(N,)`` int64 on the device, indexed by example id;
* ``batches(index_batches, gen=None)`` - the normalised inputs of each given batch of ids, in order,
  on the device (the loop draws the ids with :class:`~otreweight.data.samplers.EpochSampler`, so
  both kinds see the same batches for the same seed; ``gen`` seeds augmentation drawn in the
  workers when ``worker_augment``);
* ``chunks(batch_size, start=0)`` - the inputs in id order from ``start`` (evaluation, frozen
  features, a resumed extraction);
* ``lengths`` / ``bucket`` - per-example sequence lengths, and whether the training sampler
  batches by them; ``modality`` - the modality's name (``None``: inferred from the inputs);
  ``close()`` - stop any worker processes.

:class:`MemoryLoader` holds the whole split as one normalised tensor on the device (normalised
once; a batch is an index into it: the fastest path, used whenever the split fits).
:class:`StreamLoader` keeps the raw examples where they are and reads, decodes and normalises
each batch in ``torch.utils.data.DataLoader`` worker processes (``num_workers``, persistent across
epochs, pinned memory on CUDA), copying it to the device as the loop needs it.

:func:`build_loader` picks one (``mode="auto"``: in memory when the split holds arrays whose float
copy fits the memory budget, streamed otherwise; ``"memory"`` or ``"stream"`` to force it).
Augmentation is not the loader's business: it runs on the device batch in the loop, with the loop's
seeded generator, identically on both paths.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from .._errors import OTReweightError, check_choice
from .dataset import example_shape, has_arrays
from .modalities import Modality

LOADER_MODES = ("auto", "memory", "stream")


@runtime_checkable
class Loader(Protocol):
    """What the training loop reads from a split (see the module's docstring)."""

    labels: torch.Tensor
    lengths: torch.Tensor | None
    bucket: bool
    worker_augment: bool
    modality: str | None
    name: str

    def __len__(self) -> int: ...

    def batches(self, index_batches: Iterable[torch.Tensor], gen: torch.Generator | None = None) -> Iterator[torch.Tensor]: ...

    def chunks(self, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]: ...

    def close(self) -> None: ...


class MemoryLoader:
    """A split as one tensor on the device; ``name`` keys its cached frozen features."""

    stream = False
    worker_augment = False  # augmentation runs on the device batch

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, name: str = "split", modality: str | None = None,
                 lengths: torch.Tensor | None = None) -> None:
        self.x, self.labels, self.name, self.modality = x, labels, name, modality
        #: per-example lengths of padded sequences: a batch is cut to its longest (``None``: never cut)
        self.lengths = lengths
        self.bucket = False  # set by the caller: the training sampler batches by ``lengths``

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def source(self):
        """What the inputs are (frozen features cached for a split are recomputed if it changes)."""
        return self.x

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape)

    def batches(self, index_batches: Iterable[torch.Tensor], gen: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        for idx in index_batches:
            yield self._cut(self.x[idx], self.lengths[idx] if self.lengths is not None else None)

    def chunks(self, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        for i in range(int(start), len(self), batch_size):
            sl = slice(i, i + batch_size)
            yield self._cut(self.x[sl], self.lengths[sl] if self.lengths is not None else None)

    @staticmethod
    def _cut(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if lengths is None or lengths.numel() == 0:
            return x
        return x[:, : max(1, int(lengths.max()))]

    def close(self) -> None:
        pass


@contextlib.contextmanager
def worker_errors():
    """A one-line error raised in a loader worker (a file that does not decode) re-raised as that one
    line: the DataLoader would wrap it in the worker's whole traceback."""
    try:
        yield
    except OTReweightError as err:
        msg = str(err)
        if "DataLoader worker" not in msg:
            raise
        last = [line for line in msg.strip().splitlines() if line.strip()][-1]
        raise type(err)(last.split(": ", 1)[1] if ": " in last else last) from None


def _guarded(iterator):
    with worker_errors():
        yield from iterator


class _Plan:
    """The batch sampler a persistent DataLoader iterates: the batches of the next pass."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _read(split, i: int):
    """Example ``i`` of ``split`` as decoded, without the same-size check of a lazy image split
    (transforms give every image one size)."""
    read = getattr(split, "read", None)
    return read(i) if read is not None else split[i]


class TransformedSplit:
    """``split`` through per-example worker transforms: key ``i`` -> the evaluation transform,
    ``(i, seed)`` -> the training transform seeded with ``seed`` (see
    :class:`~otreweight.data.transforms.WorkerTransforms`); ``hwc=True`` gives ``(H, W, C)`` arrays
    (raw examples for statistics) instead of ``(C, H, W)`` tensors."""

    def __init__(self, split, transforms, hwc: bool = False) -> None:
        self.split, self.transforms, self.hwc = split, transforms, hwc
        self.labels, self.classes = split.labels, split.classes
        self.modality = getattr(split, "modality", None)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        x, y = _read(self.split, int(i))
        t = self.transforms(np.asarray(x), seed)
        return (t.permute(1, 2, 0).numpy() if self.hwc else t), y

    @property
    def example_shape(self) -> tuple:
        return (self.transforms.crop, self.transforms.crop, int(example_shape(self.split)[-1]))


class _Collate:
    def __init__(self, modality: Modality, stats: dict) -> None:
        self.modality, self.stats = modality, stats

    def __call__(self, items):
        return self.modality.collate(items, self.stats)[0]


def _worker_init(_):
    torch.set_num_threads(1)  # a worker decodes; the training process owns the cores' BLAS threads


class StreamLoader:
    """A split read, decoded and normalised per batch by ``num_workers`` DataLoader workers."""

    stream = True

    def __init__(self, split, modality: Modality, stats: dict, device, num_workers: int = 2,
                 name: str = "split", prefetch_factor: int = 4, transforms=None) -> None:
        self.split, self.name, self.device, self.stats = split, name, torch.device(device), stats
        self.modality, self._modality = modality.name, modality
        self.labels = torch.as_tensor(np.asarray(split.labels, dtype=np.int64), device=self.device)
        self.lengths, self.bucket = None, False  # lengths: set by the caller to bucket training batches
        #: training batches are augmented per example in the workers (``batches(..., gen)``)
        self.worker_augment = transforms is not None and transforms.train is not None
        self.transforms = transforms
        self._plan = _Plan()
        workers = max(0, int(num_workers))
        data = TransformedSplit(split, transforms) if transforms is not None else split
        self._loader = torch.utils.data.DataLoader(
            data, batch_sampler=self._plan, num_workers=workers, collate_fn=_Collate(modality, stats),
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def source(self):
        return self.split

    @property
    def shape(self) -> tuple:
        return (len(self), *example_shape(self.split))

    def _run(self, batches: list[list[int]]) -> Iterator[torch.Tensor]:
        self._plan.batches = batches
        with worker_errors():
            for x in self._loader:
                yield self._modality.on_device(x.to(self.device, non_blocking=True), self.stats)

    def batches(self, index_batches: Iterable[torch.Tensor], gen: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """The inputs of each batch of ids; with ``gen`` and worker augmentation, every example's
        random transform is seeded from ``gen`` (one draw per batch), else the evaluation transform."""
        if gen is None or not self.worker_augment:
            return self._run([idx.cpu().tolist() for idx in index_batches])
        plans = []
        for idx in index_batches:
            base = int(torch.randint(0, 2**62, (1,), generator=gen))
            plans.append([(i, base + k) for k, i in enumerate(idx.cpu().tolist())])
        return self._run(plans)

    def chunks(self, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        n = len(self)
        return self._run([list(range(i, min(n, i + batch_size))) for i in range(int(start), n, batch_size)])

    def close(self) -> None:
        """Stop the persistent workers (also done when the loader is garbage-collected)."""
        it = getattr(self._loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader._iterator = None


def _stack_raw(items):
    return np.stack([np.asarray(x) for x, _ in items])


#: at most this many training examples (evenly spaced) give the normalisation statistics of a lazy split
STATS_SAMPLE = 20_000


def stats_sample(split, limit: int = STATS_SAMPLE):
    """``split``, or ``limit`` of its examples evenly spaced when it is larger and not in memory
    (the per-channel mean / std of ImageNet-LT's 116k images from 20k of them: one decode pass less)."""
    if has_arrays(split) or len(split) <= limit:
        return split
    from .dataset import subset

    return subset(split, np.linspace(0, len(split) - 1, num=limit).astype(np.int64))


def raw_chunks(split, batch_size: int = 512, num_workers: int | None = None, transforms=None):
    """The raw examples of ``split`` in id order, ``batch_size`` at a time, read by worker processes
    (one pass, e.g. for normalisation statistics of a lazy split); with ``transforms``, after their
    evaluation resize / crop."""
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if transforms is not None:
        split = TransformedSplit(split, transforms, hwc=True)
    return _guarded(torch.utils.data.DataLoader(split, batch_size=batch_size, num_workers=workers,
                                            collate_fn=_stack_raw, worker_init_fn=_worker_init if workers else None))


def default_num_workers() -> int:
    """Worker processes of the stream path: the CPU cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def memory_budget(device: torch.device) -> int:
    """Bytes a split may take on the device before ``auto`` streams it: half of a GPU's memory,
    a quarter of the machine's RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory // 2)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        ram = 16 << 30
    return int(ram // 4)


def resolve_mode(split, mode: str, device, budget: int | None = None, modality: Modality | None = None) -> str:
    """``memory`` or ``stream`` for ``split`` (see :func:`build_loader`); the size on the device is
    the modality's ``bytes_per_example`` (default: float32 of the raw example's shape)."""
    check_choice("data loader", mode, LOADER_MODES)
    if mode != "auto":
        return mode
    if not has_arrays(split):
        return "stream"
    budget = memory_budget(torch.device(device)) if budget is None else budget
    shape = example_shape(split)
    per = modality.bytes_per_example(shape) if modality is not None else int(np.prod(shape)) * 4
    need = len(split) * per
    return "memory" if need <= budget else "stream"


def build_loader(split, modality: Modality, stats: dict, device, mode: str = "auto", num_workers: int | None = None,
                 name: str = "split", budget: int | None = None, transforms=None):
    """A :class:`MemoryLoader` or :class:`StreamLoader` over ``split`` (a dataset of the
    :mod:`~otreweight.data.dataset` protocol), its inputs normalised with ``stats`` by ``modality``;
    ``transforms`` (:class:`~otreweight.data.transforms.WorkerTransforms`) run per example in the
    workers (an in-memory loader holds the evaluation transform's images)."""
    device = torch.device(device)
    if len(split) == 0:
        raise OTReweightError(f"the {name} split is empty; it needs at least one example")
    # transformed examples are made by the workers: auto streams them (memory: decoded once through them)
    kind = "stream" if transforms is not None and mode == "auto" else resolve_mode(split, mode, device, budget, modality)
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if kind == "stream":
        return StreamLoader(split, modality, stats, device, workers, name=name, transforms=transforms)
    if has_arrays(split) and transforms is None:
        x, y = split.arrays()
        t = modality.to_tensor(x, stats, device)
        return MemoryLoader(t, torch.as_tensor(np.asarray(y), device=device), name, modality.name,
                            _lengths(modality, t, stats))
    # A lazy (or transformed) split asked to sit in memory: decode it once through the workers.
    stream = StreamLoader(split, modality, stats, device, workers, name=name, transforms=transforms)
    try:
        x = torch.cat(list(stream.chunks(1024)))
    finally:
        stream.close()
    return MemoryLoader(x, stream.labels, name, modality.name, _lengths(modality, x, stats))


def _lengths(modality: Modality, x: torch.Tensor, stats: dict):
    """Per-example lengths of a padded sequence modality (``batch_lengths``), else ``None``."""
    fn = getattr(modality, "batch_lengths", None)
    return fn(x, stats) if fn is not None else None


__all__ = ["LOADER_MODES", "MemoryLoader", "StreamLoader", "build_loader", "default_num_workers", "memory_budget",
           "TransformedSplit", "raw_chunks", "resolve_mode", "stats_sample"]
