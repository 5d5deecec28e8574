"""Forward passes without gradients: backbone features and logits of whole splits, and their cache.

With a frozen backbone the features of a split cannot change, so they are computed once, in large
batches (``eval_batch_size``), in eval mode, without gradients, and kept in a
:class:`FeatureCache` keyed by the split's name and the view (``"plain"`` = un-augmented); several
classifier-only runs from one backbone share one cache, so no feature is computed twice.

With a :class:`FeatureStore` the cache also keeps them on disk, for other runs with the same
backbone (a frozen pretrained encoder: every seed of a comparison, a re-run, ``evaluate``): one
``(N, d)`` float32 ``.npy`` per split (exact: a stored run ends as a computed one), keyed by a SHA-256 of the backbone's weights and buffers (the classifier
excluded), of the split's inputs (every input tensor of an in-memory split; the item names, the
subset ids, labels and statistics of a streamed one) and of the view. Entries are written
atomically; a damaged one is computed again.

Under several processes (torchrun) a split's features and logits are computed in shares: each rank
runs the rows of its contiguous share (:func:`otreweight.distributed.shard`) and the shares are
gathered back in id order, so every rank holds the whole split's features or logits, as one
process would, for 1/N of the forward passes. The store is read by every rank and written by
rank 0 alone (see :meth:`FeatureStore.features`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed as dist


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

    def __init__(self, store: "FeatureStore | None" = None) -> None:
        self._store: dict = {}
        self.disk = store

    def get(self, key: tuple, source, compute) -> torch.Tensor:
        hit = self._store.get(key)
        if hit is None or hit[0] is not source:
            hit = self._store[key] = (source, compute())
        return hit[1]

    def features(self, model: nn.Module, loader, batch_size: int = 256, channels_last: bool = False,
                 view: str = "plain") -> torch.Tensor:
        """The cached float features of ``loader``'s split (computed on the first call)."""
        def compute():
            # several processes: each rank computes its share, every rank holds them all
            fn = lambda: compute_features(model, loader, batch_size, channels_last, shard=True).float()  # noqa: E731
            return fn() if self.disk is None else self.disk.features(model, loader, view, fn)

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
    return h.hexdigest()


class FeatureStore:
    """Frozen-backbone features of whole splits on disk (see the module docstring)."""

    def __init__(self, folder) -> None:
        self.folder = Path(folder).expanduser()
        self.hits = self.misses = 0

    def path(self, model: nn.Module, loader, view: str = "plain") -> Path:
        key = hashlib.sha256(f"{backbone_digest(model)}|{inputs_digest(loader)}|{view}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.npy"

    def features(self, model: nn.Module, loader, view: str, compute) -> torch.Tensor:
        """The stored features of ``loader`` (on its device), or ``compute()`` stored for next time.

        Under several processes every rank reads the entry, and they agree on whether it is usable
        (a collective): if any rank cannot read it, all compute (``compute`` is itself a collective,
        each rank computing its share), rank 0 alone writes the entry (atomically) and the others
        wait for it at a barrier, so no rank reads a half-written file and no two write one."""
        path = self.path(model, loader, view)
        device = loader.labels.device
        arr = self._read(path, len(loader))
        if dist.all_true(arr is not None, device):
            self.hits += 1
            return torch.from_numpy(arr).to(device)
        self.misses += 1
        feats = compute()
        if dist.is_main():
            self._write(path, feats)
        dist.barrier()
        return feats

    @staticmethod
    def _read(path: Path, n: int) -> np.ndarray | None:
        """The entry at ``path`` if it holds ``n`` float32 rows, else ``None`` (missing or damaged)."""
        if not path.exists():
            return None
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.ndim == 2 and arr.shape[0] == n and arr.dtype == np.float32:
                return np.array(arr)
        except (OSError, ValueError):
            pass  # damaged: computed again
        return None

    def _write(self, path: Path, feats: torch.Tensor) -> None:
        from ..utils import atomic_write

        arr = feats.detach().float().cpu().numpy()
        try:
            atomic_write(path, lambda f: np.save(f, arr))
        except OSError:  # a full or read-only store never stops a run: the features are in memory
            pass


__all__ = ["FeatureCache", "FeatureStore", "backbone_digest", "inputs_digest", "compute_features", "layout", "predict_logits", "probe"]
