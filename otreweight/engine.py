"""The training loop's public entry points (the loop itself lives in :mod:`otreweight.train`).

``fit`` trains a model with a method and selects it on validation; ``evaluate`` scores a model on
labelled data; ``compute_features`` / ``predict_logits`` are forward passes without gradients.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._errors import OTReweightError, check_same_length
from .config import TRAINABLE, FitConfig  # noqa: F401  (re-exported)
from .data.modalities import get_modality, infer_modality
from .data.samplers import SAMPLINGS  # noqa: F401
from .metrics import classification_metrics
from .train.features import FeatureCache, compute_features, predict_logits, probe
from .train.loop import FitResult, as_tensor, fit
from .utils import pick_device


def evaluate(
    model: nn.Module,
    x,
    y,
    train_counts=None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    many_threshold: int = 100,
    few_threshold: int = 20,
    modality: str | None = None,
) -> dict:
    """Metrics of :func:`otreweight.metrics.classification_metrics` for ``model`` on ``(x, y)``
    (``modality``: the inputs' kind, by default read off ``x``)."""
    dev = next(model.parameters()).device if device is None else pick_device(device)
    model.to(dev)
    xt = as_tensor("evaluation inputs", x, dev)
    yt = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64)
    check_same_length(x=xt, y=yt)
    if yt.shape[0] == 0:
        raise OTReweightError("evaluate got zero examples; give at least one labelled example")
    channels_last = get_modality(modality or infer_modality(xt)).channels_last
    probe(model, xt[:2], channels_last, "the evaluation inputs")
    pred = predict_logits(model, xt, batch_size, channels_last).argmax(1).cpu().numpy()
    return classification_metrics(
        yt, pred, train_counts, model.classifier.out_features, many_threshold, few_threshold
    )


__all__ = ["FeatureCache", "FitConfig", "FitResult", "compute_features", "evaluate", "fit", "predict_logits"]
