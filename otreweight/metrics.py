r"""Evaluation metrics for imbalanced classification.

* ``accuracy``: top-1 accuracy;
* ``balanced_accuracy``: mean per-class recall, :math:`\frac1K\sum_c \mathrm{recall}_c`;
* ``per_class``: recall of each class;
* ``many`` / ``medium`` / ``few``: mean per-class recall over the classes with more than
  ``many_threshold`` (100), between ``few_threshold`` (20) and ``many_threshold``, and fewer than
  ``few_threshold`` *training* examples (Kang et al., 2020); ``None`` when a group is empty;
* ``gmean``: geometric mean of the per-class recalls, :math:`(\prod_c \mathrm{recall}_c)^{1/K}`
  (0 as soon as one class is never recognised).

Values are fractions in [0, 1].
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from ._errors import OTReweightError, check_labels, check_same_length


def shot_groups(train_counts, many_threshold: int = 100, few_threshold: int = 20) -> dict[str, np.ndarray]:
    """Class indices of the many (> many), medium (few..many) and few (< few) shot groups."""
    if few_threshold > many_threshold:
        raise OTReweightError(
            f"few_threshold ({few_threshold}) must not exceed many_threshold ({many_threshold})"
        )
    n = np.asarray(train_counts)
    return {
        "many": np.flatnonzero(n > many_threshold),
        "medium": np.flatnonzero((n >= few_threshold) & (n <= many_threshold)),
        "few": np.flatnonzero(n < few_threshold),
    }


def classification_metrics(
    y_true,
    y_pred,
    train_counts=None,
    num_classes: int | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
    """Accuracy, balanced accuracy, per-class recall, many/medium/few, geometric mean.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        True and predicted labels in ``0..K-1``.
    train_counts : array-like of int, shape (K,), optional
        Training examples per class, for the many/medium/few groups (omitted if not given).
    num_classes : int, optional
        ``K``; by default ``len(train_counts)`` or ``max(y_true, y_pred) + 1``.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``gmean``, ``per_class`` (list), and with
        ``train_counts`` also ``many``, ``medium``, ``few`` and ``shot_thresholds``.
    """
    yt = np.asarray(y_true).astype(np.int64)
    yp = np.asarray(y_pred).astype(np.int64)
    check_same_length(y_true=yt, y_pred=yp)
    if yt.size == 0:
        raise OTReweightError("cannot evaluate on zero examples")
    if num_classes is None:
        num_classes = len(train_counts) if train_counts is not None else int(max(yt.max(), yp.max())) + 1
    check_labels("y_true", yt, num_classes)
    check_labels("y_pred", yp, num_classes)
    cm = confusion_matrix(yt, yp, labels=np.arange(num_classes))
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.full(num_classes, np.nan)
    recall[present] = np.diag(cm)[present] / support[present]
    r = recall[present]
    out = {
        "accuracy": float((yt == yp).mean()),
        "balanced_accuracy": float(r.mean()),
        "gmean": float(np.exp(np.log(np.clip(r, 1e-300, None)).mean())) if (r > 0).all() else 0.0,
        "per_class": [None if np.isnan(v) else float(v) for v in recall],
    }
    if train_counts is not None:
        if len(train_counts) != num_classes:
            raise OTReweightError(f"train_counts has {len(train_counts)} entries for {num_classes} classes")
        for name, cls in shot_groups(train_counts, many_threshold, few_threshold).items():
            vals = recall[cls][~np.isnan(recall[cls])]
            out[name] = float(vals.mean()) if vals.size else None
        out["shot_thresholds"] = {"many": f"> {many_threshold}", "few": f"< {few_threshold}"}
    return out
