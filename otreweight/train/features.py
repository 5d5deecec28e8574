"""Forward passes without gradients: backbone features and logits of whole splits, and their cache.

With a frozen backbone the features of a split cannot change, so they are computed once, in large
batches (``eval_batch_size``), in eval mode, without gradients, and kept in a
:class:`FeatureCache` keyed by the split's name and the view (``"plain"`` = un-augmented); several
classifier-only runs from one backbone share one cache, so no feature is computed twice.

With a :class:`FeatureStore` the cache also keeps them on disk, for other runs with the same
backbone (a frozen pretrained encoder: every seed of a comparison, every stage-2 method, a re-run,
``evaluate``): one ``(N, d)`` ``.npy`` per split, keyed by a SHA-256 of the backbone's weights and
buffers (the classifier excluded), of the split's inputs (every input tensor of an in-memory split;
the item names, the subset ids, labels, statistics and worker transforms of a streamed one) and of
the view. ``dtype`` is float32 (exact) or float16 (half the disk and memory: iNaturalist's 437k x
2,048 train features are 1.8 GB); the features are rounded to it in every run, stored or computed,
so a run that finds them on disk ends exactly as the one that computed them. A stored split is
served as a memory map (on the CPU nothing is read into RAM before a batch needs it; on a GPU it is
copied to the device once). Extraction writes into ``<key>.partial.npy`` and records after every
batch how many rows are done, so an interrupted extraction resumes where it stopped; the finished
file is renamed into place. Beside each entry ``<key>.sha256`` holds the SHA-256 of its bytes, checked
whenever it is opened: an entry that is damaged (even with its header intact) or has no checksum is
computed again.

Under several processes (torchrun) a split's features and logits are computed in shares: each rank
runs the rows of its contiguous share (:func:`otreweight.distributed.shard`) and the shares are
gathered back in id order, so every rank holds the whole split's features or logits, as one
process would, for 1/N of the forward passes. The store is read by every rank and written by
rank 0 alone (see :meth:`FeatureStore.features`); an interrupted extraction under several processes
starts again (the resumable extraction is the one-process path).

"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed as dist
from ..utils import file_digest


def layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels-last memory format for 4-d conv inputs when asked, else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _chunks(x, batch_size: int, rows: slice | None = None):
    """``x`` (a tensor or a loader) in id order, ``batch_size`` rows at a time; ``rows``: those rows only."""
    if isinstance(x, torch.Tensor):
        x = x if rows is None else x[rows]
        return (x[i : i + batch_size] for i in range(0, x.shape[0], batch_size))
    if rows is None:
        return x.chunks(batch_size)  # a loader
    ids = torch.arange(rows.start, rows.stop, device=x.labels.device)
    return x.batches(list(ids.split(batch_size)))


def _device(x) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else x.labels.device


def _share(x, shard: bool) -> slice | None:
    """This rank's rows of ``x`` when ``shard`` is set under several processes (else all)."""
    if not shard or dist.world_size() == 1:
        return None
    return dist.shard(x.shape[0] if isinstance(x, torch.Tensor) else len(x))


def _forward_rows(model: nn.Module, fn, x, batch_size: int, channels_last: bool, shard: bool, width: int):
    """``fn`` of every chunk of ``x`` (or of this rank's share of it, gathered back in id order) in eval
    mode; an empty share is a ``(0, width)`` tensor."""
    rows = _share(x, shard)
    was_training = model.training
    model.eval()
    try:
        out = [fn(layout(xb, channels_last)) for xb in _chunks(x, batch_size, rows)]
    finally:
        model.train(was_training)
    if out:
        t = torch.cat(out)
    else:
        p = next(model.parameters(), None)
        t = torch.empty(0, width, device=_device(x), dtype=p.dtype if p is not None else torch.float32)
    return t if rows is None else dist.all_gather_rows(t)


@torch.no_grad()
def compute_features(model: nn.Module, x, batch_size: int = 256, channels_last: bool = False,
                     shard: bool = False) -> torch.Tensor:
    """Backbone features of ``x`` (a tensor or a loader) in eval mode, without gradients (restores
    the training flag).

    ``shard=True`` under several processes: each rank computes its contiguous share of the rows
    (:func:`otreweight.distributed.shard`) and every rank receives all of them, in id order (a
    collective: every rank must call it). With one process it is ignored."""
    return _forward_rows(model, model.features, x, batch_size, channels_last, shard, model.feature_dim)


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int = 256, channels_last: bool = False,
                   shard: bool = False) -> torch.Tensor:
    """Logits of ``x`` (a tensor or a loader) in eval mode, without gradients (restores the training
    flag); ``shard`` as in :func:`compute_features`."""
    width = model.classifier.out_features if shard else 0
    return _forward_rows(model, model, x, batch_size, channels_last, shard, width)


def probe(model: nn.Module, x: torch.Tensor, channels_last: bool = False, what: str = "the inputs",
          who: str = "the model", hint: str = "build the model for this data", shape: tuple | None = None) -> torch.Tensor:
    """Logits of a couple of examples in eval mode (restoring the mode), or a one-line error when the
    model cannot take them (another width, channel count or kind of input): ``"{who} does not take
    {what} (one example: shape {shape}; <the error>); {hint}"``."""
    from .._errors import OTReweightError

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(layout(x.to(next(model.parameters()).device), channels_last))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        shape = tuple(x.shape[1:]) if shape is None else tuple(shape)
        raise OTReweightError(f"{who} does not take {what} (one example: shape {shape}; {first[:160]}); {hint}") from None
    finally:
        model.train(was)


class FeatureCache:
    """Frozen-backbone features of whole splits, keyed by ``(split name, view)``.

    An entry remembers the inputs it was computed from (the loader's ``source``); asked for the same
    key with other inputs, it computes them anew instead of serving stale features. Share one cache
    only between runs whose backbones are identical (e.g. several stage-2 methods from one stage-1 model).
    """

    #: the most bytes of augmented per-epoch features kept in memory (beyond it: computed per run)
    AUGMENTED_BYTES = 2 << 30

    def __init__(self, store: "FeatureStore | None" = None, keep_augmented: bool = True) -> None:
        self._store: dict = {}
        self.disk = store
        self.augmented_passes = 0  # augmented views computed (each epoch once when shared)
        self._augmented_bytes = 0 if keep_augmented else self.AUGMENTED_BYTES  # a private cache keeps none

    def augmented(self, model: nn.Module, loader, epoch: int, seed: int, augment: str, compute) -> torch.Tensor:
        """Epoch ``epoch``'s frozen features of the augmented view drawn with ``seed`` (``compute()``
        on the first call), keyed by (backbone, split, epoch, draw, augmentation): kept in the store
        on disk when there is one, else in memory up to :attr:`AUGMENTED_BYTES` (beyond it each call
        computes them again - the same values, without the saving)."""
        def count():
            self.augmented_passes += 1
            return compute()

        view = f"augmented:{epoch}:{seed}:{augment}"
        if self.disk is not None:
            return self.disk.computed(model, loader, view, count)
        key = (loader.name, view, backbone_digest(model))
        hit = self._store.get(key)
        if hit is not None and hit[0] is loader.source:
            return hit[1]
        feats = count()
        size = feats.numel() * feats.element_size()
        if self._augmented_bytes + size <= self.AUGMENTED_BYTES:
            self._store[key] = (loader.source, feats)
            self._augmented_bytes += size
        return feats

    def get(self, key: tuple, source, compute) -> torch.Tensor:
        hit = self._store.get(key)
        if hit is None or hit[0] is not source:
            hit = self._store[key] = (source, compute())
        return hit[1]

    def features(self, model: nn.Module, loader, batch_size: int = 256, channels_last: bool = False,
                 view: str = "plain") -> torch.Tensor:
        """The cached features of ``loader``'s split (computed on the first call): float32, or the
        store's float16 (callers take ``.float()`` of the rows they use)."""
        def compute():
            if self.disk is None:  # several processes: each rank computes its share, every rank holds them all
                return compute_features(model, loader, batch_size, channels_last, shard=True).float()
            return self.disk.features(model, loader, view, batch_size, channels_last)

        return self.get((loader.name, view), loader.source, compute)

    def __len__(self) -> int:
        return len(self._store)


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        flat = t.contiguous().reshape(-1)
        h.update((flat.float() if flat.dtype == torch.bfloat16 else flat).view(torch.uint8).numpy().tobytes())


def backbone_digest(model: nn.Module) -> str:
    """SHA-256 of every state entry of ``model`` but its ``classifier``'s (what features depend on)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for k, v in sorted(model.state_dict().items()):
        if k.startswith("classifier."):
            continue
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            _hash_tensor(h, v)
    return h.hexdigest()


def inputs_digest(loader) -> str:
    """SHA-256 of what a loader feeds the model (see the module docstring)."""
    h = hashlib.sha256(type(loader).__name__.encode())
    _hash_tensor(h, torch.as_tensor(loader.labels))
    x = getattr(loader, "x", None)
    if isinstance(x, torch.Tensor):
        _hash_tensor(h, x)
        lengths = getattr(loader, "lengths", None)
        if lengths is not None:
            _hash_tensor(h, lengths)
        return h.hexdigest()
    from ..data.dataset import fingerprint

    split = loader.source
    h.update(fingerprint(split).encode())
    while split is not None:
        indices = getattr(split, "indices", None)
        if indices is not None:
            h.update(np.ascontiguousarray(indices).tobytes())
        names = getattr(split, "names", None)
        if names is not None:
            h.update(repr(list(names)).encode())
        split = getattr(split, "base", None)
    h.update(json.dumps(getattr(loader, "stats", None), sort_keys=True, default=str).encode())
    h.update(repr(getattr(loader, "transforms", None)).encode())
    return h.hexdigest()


FEATURE_DTYPES = ("float32", "float16")


@torch.no_grad()
def _feature_chunks(model: nn.Module, loader, batch_size: int, channels_last: bool, start: int):
    """Backbone features of ``loader``'s examples ``start..`` in id order, a batch at a time (eval mode)."""
    was = model.training
    model.eval()
    try:
        for xb in loader.chunks(batch_size, start=start):
            yield model.features(layout(xb, channels_last)).float()
    finally:
        model.train(was)


class FeatureStore:
    """Frozen-backbone features of whole splits on disk (see the module docstring)."""

    def __init__(self, folder, dtype: str = "float32") -> None:
        from .._errors import check_choice

        self.folder = Path(folder).expanduser()
        self.dtype = np.dtype(check_choice("feature dtype", dtype, FEATURE_DTYPES))
        self.hits = self.misses = self.resumed = 0

    def path(self, model: nn.Module, loader, view: str = "plain") -> Path:
        key = hashlib.sha256(f"{backbone_digest(model)}|{inputs_digest(loader)}|{view}|{self.dtype.name}"
                             .encode()).hexdigest()[:32]
        return self.folder / f"{key}.npy"

    def _open(self, path: Path, n: int):
        try:
            if path.with_suffix(".sha256").read_text().strip() != file_digest(path):
                return None  # damaged bytes (or no checksum): computed again
            arr = np.load(path, mmap_mode="c")  # copy-on-write: a writable view
        except (OSError, ValueError, UnicodeDecodeError):
            return None  # damaged: computed again
        return arr if arr.ndim == 2 and arr.shape[0] == n and arr.dtype == self.dtype else None

    def _serve(self, arr: np.ndarray, device: torch.device) -> torch.Tensor:
        t = torch.from_numpy(arr)
        return t.to(device) if device.type != "cpu" else t

    def _lookup(self, model: nn.Module, loader, view: str) -> tuple:
        """``(path, device, stored)``: the entry's path, the loader's device and its features when
        every rank can read the entry (a collective), else ``None``; counted as a hit or a miss."""
        path, device = self.path(model, loader, view), loader.labels.device
        arr = self._open(path, len(loader)) if path.exists() else None
        if dist.all_true(arr is not None, device):
            self.hits += 1
            return path, device, self._serve(arr, device)
        self.misses += 1
        return path, device, None

    def features(self, model: nn.Module, loader, view: str, batch_size: int = 256,
                 channels_last: bool = False) -> torch.Tensor:
        """The stored features of ``loader`` (extracted first, or resumed, when not on disk).

        Under several processes every rank opens the entry and they agree on whether it is usable
        (a collective): if any rank cannot read it, all compute their shares (gathered), rank 0 alone
        writes the entry atomically and the others wait for it at a barrier, so no rank reads a
        half-written file and no two write one."""
        path, device, stored = self._lookup(model, loader, view)
        if stored is not None:
            return stored
        if dist.world_size() > 1:
            feats = compute_features(model, loader, batch_size, channels_last, shard=True).float()
            rounded = feats.cpu().numpy().astype(self.dtype)
            if dist.is_main():
                self._write(path, rounded)
            dist.barrier()
            return torch.from_numpy(rounded).to(device)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            arr = self._extract(path, model, loader, batch_size, channels_last)
        except OSError:  # a full or read-only store never stops a run: the features in memory
            feats = compute_features(model, loader, batch_size, channels_last).float()
            return feats.to(torch.float16) if self.dtype == np.float16 else feats
        return self._serve(arr, device)

    def computed(self, model: nn.Module, loader, view: str, compute) -> torch.Tensor:
        """Features of ``loader`` under ``view`` that ``compute()`` gives (e.g. an augmented view),
        rounded to the store's dtype and kept on disk: computed once, read back by every later call."""
        path, device, stored = self._lookup(model, loader, view)
        if stored is not None:
            return stored
        rounded = compute().float().cpu().numpy().astype(self.dtype)
        if dist.is_main():
            self._write(path, rounded)
        dist.barrier()
        return torch.from_numpy(rounded).to(device)

    def _write(self, path: Path, arr: np.ndarray) -> None:
        from ..utils import atomic_write

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.save(f, arr))
            _write_digest(path)
        except OSError:  # a full or read-only store never stops a run: the features are in memory
            pass

    def _extract(self, path: Path, model, loader, batch_size: int, channels_last: bool) -> np.ndarray:
        """Fill ``<key>.partial.npy`` batch by batch (resuming a partial one), then rename it to ``path``."""
        from ..utils import atomic_save

        partial, progress = path.with_suffix(".partial.npy"), path.with_suffix(".partial.json")
        n, done, arr = len(loader), 0, None
        if partial.exists() and progress.exists():
            try:
                done = int(json.loads(progress.read_text())["done"])
                arr = np.load(partial, mmap_mode="r+")
                if arr.ndim != 2 or arr.shape[0] != n or arr.dtype != self.dtype or not 0 <= done <= n:
                    arr, done = None, 0
                elif done:
                    self.resumed += 1
            except (OSError, ValueError, KeyError, TypeError):
                arr, done = None, 0
        for chunk in _feature_chunks(model, loader, batch_size, channels_last, done):
            if arr is None:
                arr = np.lib.format.open_memmap(partial, mode="w+", dtype=self.dtype, shape=(n, chunk.shape[1]))
            arr[done : done + chunk.shape[0]] = chunk.cpu().numpy().astype(self.dtype, copy=False)
            done += chunk.shape[0]
            arr.flush()
            atomic_save(json.dumps({"done": done, "n": n}), progress)
        if arr is None:  # an empty split
            arr = np.lib.format.open_memmap(partial, mode="w+", dtype=self.dtype, shape=(0, model.feature_dim))
        arr.flush()
        del arr
        partial.replace(path)
        progress.unlink(missing_ok=True)
        _write_digest(path)
        return np.load(path, mmap_mode="c")


def _write_digest(path: Path) -> None:
    """``<entry>.sha256`` beside a finished store entry (written after it: an entry without one is
    computed again)."""
    from ..utils import atomic_save

    atomic_save(file_digest(path) + "\n", path.with_suffix(".sha256"))


__all__ = ["FEATURE_DTYPES", "FeatureCache", "FeatureStore", "backbone_digest", "inputs_digest", "compute_features", "layout", "predict_logits", "probe"]
