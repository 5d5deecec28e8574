"""Forward passes without gradients: backbone features and logits of whole splits, and their cache.

With a frozen backbone the features of a split cannot change, so they are computed once, in large
batches (``eval_batch_size``), in eval mode, without gradients, and kept in a
:class:`FeatureCache` keyed by the split's name and the view (``"plain"`` = un-augmented); several
classifier-only runs from one backbone share one cache, so no feature is computed twice.
"""
from __future__ import annotations

import torch
from torch import nn


def layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels-last memory format for 4-d conv inputs when asked, else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _chunks(x, batch_size: int):
    if isinstance(x, torch.Tensor):
        return (x[i : i + batch_size] for i in range(0, x.shape[0], batch_size))
    return x.chunks(batch_size)  # a loader


@torch.no_grad()
def compute_features(model: nn.Module, x, batch_size: int = 256, channels_last: bool = False) -> torch.Tensor:
    """Backbone features of ``x`` (a tensor or a loader) in eval mode, without gradients (restores
    the training flag)."""
    was_training = model.training
    model.eval()
    out = [model.features(layout(xb, channels_last)) for xb in _chunks(x, batch_size)]
    model.train(was_training)
    if out:
        return torch.cat(out)
    device = x.device if isinstance(x, torch.Tensor) else x.labels.device
    return torch.empty(0, model.feature_dim, device=device)


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int = 256, channels_last: bool = False) -> torch.Tensor:
    """Logits of ``x`` (a tensor or a loader) in eval mode, without gradients (restores the training flag)."""
    was_training = model.training
    model.eval()
    out = [model(layout(xb, channels_last)) for xb in _chunks(x, batch_size)]
    model.train(was_training)
    return torch.cat(out)


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

    def __init__(self) -> None:
        self._store: dict = {}

    def get(self, key: tuple, source, compute) -> torch.Tensor:
        hit = self._store.get(key)
        if hit is None or hit[0] is not source:
            hit = self._store[key] = (source, compute())
        return hit[1]

    def features(self, model: nn.Module, loader, batch_size: int = 256, channels_last: bool = False,
                 view: str = "plain") -> torch.Tensor:
        """The cached float features of ``loader``'s split (computed on the first call)."""
        return self.get((loader.name, view), loader.source,
                        lambda: compute_features(model, loader, batch_size, channels_last).float())

    def __len__(self) -> int:
        return len(self._store)


__all__ = ["FeatureCache", "compute_features", "layout", "predict_logits", "probe"]
