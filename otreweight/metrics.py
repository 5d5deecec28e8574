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

For any classifier's predictions (labels of any type, e.g. strings), :func:`per_class_table`,
:func:`geometric_mean_score`, :func:`imbalanced_scores` and :func:`classification_report_imbalanced`
add per-class precision / recall / specificity / F1, and a text report in the vocabulary of
imbalanced-learn.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.metrics import confusion_matrix
from sklearn.utils.multiclass import unique_labels

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


def _labels_and_confusion(y_true, y_pred, labels=None):
    """Checked label arrays, the label list and the confusion matrix over it."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1:
        raise OTReweightError(
            f"y_true and y_pred must be 1-d arrays of labels, got shapes {yt.shape} and {yp.shape}"
        )
    check_same_length(y_true=yt, y_pred=yp)
    if yt.size == 0:
        raise OTReweightError("cannot evaluate on zero examples")
    labels = unique_labels(yt, yp) if labels is None else np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise OTReweightError("labels must be a non-empty 1-d list of class labels")
    return labels, confusion_matrix(yt, yp, labels=labels)


def _train_counts_for(labels, train_counts) -> np.ndarray:
    """Training counts aligned with ``labels``, from an array (in label order) or a mapping."""
    if isinstance(train_counts, Mapping):
        missing = [lab for lab in labels.tolist() if lab not in train_counts]
        if missing:
            raise OTReweightError(
                f"train_counts has no count for class(es) {missing[:10]}; give a count for every evaluated class"
            )
        return np.array([train_counts[lab] for lab in labels.tolist()], dtype=np.int64)
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.shape[0] != labels.shape[0]:
        raise OTReweightError(
            f"train_counts has {counts.size} entries for {labels.shape[0]} classes; give one count per class "
            "in sorted label order, or a mapping such as collections.Counter(y_train)"
        )
    return counts.astype(np.int64)


def per_class_table(
    y_true,
    y_pred,
    labels=None,
    train_counts=None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, np.ndarray]:
    r"""Per-class precision, recall, specificity, F1 and support.

    For class :math:`c` with :math:`TP_c, FP_c, FN_c, TN_c` counted one-vs-rest:
    precision :math:`TP/(TP+FP)` (0 when nothing is predicted as :math:`c`), recall
    :math:`TP/(TP+FN)` (NaN when :math:`c` has no true example), specificity :math:`TN/(TN+FP)`,
    F1 the harmonic mean of precision and recall (0 when both are 0).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels, of any type a classifier returns.
    labels : array-like, optional
        The classes to report, in this order; default the sorted union of ``y_true`` and ``y_pred``.
    train_counts : array-like of int or mapping, optional
        Training examples per class, in the order of ``labels`` or as ``{label: count}`` (e.g.
        ``collections.Counter(y_train)``); adds ``train`` and the shot ``group``.
    many_threshold, few_threshold : int
        Shot groups: many ``> many_threshold``, few ``< few_threshold``, medium in between.

    Returns
    -------
    dict of ndarray
        ``label``, ``precision``, ``recall``, ``specificity``, ``f1``, ``support`` and, with
        ``train_counts``, ``train`` and ``group`` (``"many"``, ``"medium"`` or ``"few"``).
    """
    labels, cm = _labels_and_confusion(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    total = cm.sum()
    fp = predicted - tp
    tn = total - support - fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.full_like(tp, np.nan), where=support > 0)
    neg = tn + fp
    specificity = np.divide(tn, neg, out=np.full_like(tp, np.nan), where=neg > 0)
    pr = precision + np.nan_to_num(recall)
    f1 = np.divide(2 * precision * np.nan_to_num(recall), pr, out=np.zeros_like(tp), where=pr > 0)
    out = {
        "label": labels,
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "support": support.astype(np.int64),
    }
    if train_counts is not None:
        counts = _train_counts_for(labels, train_counts)
        group = np.empty(labels.shape[0], dtype=object)
        for name, idx in shot_groups(counts, many_threshold, few_threshold).items():
            group[idx] = name
        out["train"] = counts
        out["group"] = group
    return out


def geometric_mean_score(y_true, y_pred, labels=None, correction: float = 0.0) -> float:
    r"""Geometric mean of the per-class recalls, :math:`(\prod_c \mathrm{recall}_c)^{1/K}`.

    Taken over the classes of ``labels`` (default: the sorted union of ``y_true`` and ``y_pred``)
    that have at least one true example. It is 0 as soon as one class is never recognised,
    unless ``correction > 0``, which replaces a zero recall by ``correction`` (imbalanced-learn's
    convention).

    Returns
    -------
    float
        In [0, 1].
    """
    if not 0.0 <= float(correction) <= 1.0:
        raise OTReweightError(f"correction must lie in [0, 1], got {correction}")
    recall = per_class_table(y_true, y_pred, labels)["recall"]
    r = recall[~np.isnan(recall)]
    if r.size == 0:
        raise OTReweightError("none of the given labels occurs in y_true; cannot average recalls")
    r = np.where(r > 0, r, correction)
    if (r <= 0).any():
        return 0.0
    return float(np.exp(np.log(r).mean()))


def imbalanced_scores(
    y_true,
    y_pred,
    train_counts=None,
    labels=None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
    """Summary scores of a classifier's predictions on imbalanced data.

    Returns
    -------
    dict
        ``accuracy``; ``balanced_accuracy`` (mean recall over the classes with a true example);
        ``gmean`` (:func:`geometric_mean_score`); ``macro_precision``, ``macro_recall``,
        ``macro_f1`` (unweighted means over ``labels``, recall over classes with a true example);
        ``min_recall``; and with ``train_counts`` the mean recall of the ``many``, ``medium`` and
        ``few`` shot groups (``None`` for an empty group). Arguments as in :func:`per_class_table`.
    """
    table = per_class_table(y_true, y_pred, labels, train_counts, many_threshold, few_threshold)
    rec = table["recall"]
    has = ~np.isnan(rec)
    if not has.any():
        raise OTReweightError("none of the given labels occurs in y_true; cannot average recalls")
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    out = {
        "accuracy": float((yt == yp).mean()),
        "balanced_accuracy": float(rec[has].mean()),
        "gmean": geometric_mean_score(yt, yp, table["label"]),
        "macro_precision": float(table["precision"].mean()),
        "macro_recall": float(rec[has].mean()),
        "macro_f1": float(table["f1"].mean()),
        "min_recall": float(rec[has].min()),
    }
    if train_counts is not None:
        for name in ("many", "medium", "few"):
            sel = (table["group"] == name) & has
            out[name] = float(rec[sel].mean()) if sel.any() else None
    return out


def classification_report_imbalanced(
    y_true,
    y_pred,
    train_counts=None,
    labels=None,
    target_names=None,
    digits: int = 3,
    many_threshold: int = 100,
    few_threshold: int = 20,
    output_dict: bool = False,
):
    """A text report of per-class and summary scores for imbalanced classification.

    One line per class (``train`` count and shot group when ``train_counts`` is given, test
    ``support``, precision, recall, specificity, F1), then accuracy, balanced accuracy, geometric
    mean of recalls, macro precision / recall / F1 and, with ``train_counts``, the mean recall of
    the many / medium / few shot groups. Arguments as in :func:`per_class_table`.

    Parameters
    ----------
    target_names : list of str, optional
        Display names of ``labels``, in the same order.
    digits : int
        Decimal places of the scores.
    output_dict : bool
        Return ``{"per_class": per_class_table(...), "scores": imbalanced_scores(...)}`` instead
        of text.

    Returns
    -------
    str or dict
    """
    table = per_class_table(y_true, y_pred, labels, train_counts, many_threshold, few_threshold)
    scores = imbalanced_scores(y_true, y_pred, train_counts, table["label"], many_threshold, few_threshold)
    if output_dict:
        return {"per_class": table, "scores": scores}
    names = [str(v) for v in table["label"]] if target_names is None else [str(v) for v in target_names]
    if len(names) != table["label"].shape[0]:
        raise OTReweightError(f"target_names has {len(names)} names for {table['label'].shape[0]} classes")
    fmt = lambda v: "nan".rjust(digits + 2) if v is None or np.isnan(v) else f"{v:.{digits}f}"  # noqa: E731
    width = max(12, max(len(nm) for nm in names))
    col = max(digits + 3, 11)
    head = f"{'class':<{width}}"
    if train_counts is not None:
        head += f" {'train':>7} {'group':>6}"
    head += f" {'support':>8}" + "".join(f" {h:>{col}}" for h in ("precision", "recall", "specificity", "f1"))
    lines = [head]
    for c, nm in enumerate(names):
        row = f"{nm:<{width}}"
        if train_counts is not None:
            row += f" {table['train'][c]:>7d} {table['group'][c]:>6}"
        row += f" {table['support'][c]:>8d}"
        row += "".join(
            f" {fmt(table[k][c]):>{col}}" for k in ("precision", "recall", "specificity", "f1")
        )
        lines.append(row)
    lines.append("")
    summary = [
        ("accuracy", scores["accuracy"]),
        ("balanced accuracy", scores["balanced_accuracy"]),
        ("geometric mean of recalls", scores["gmean"]),
        ("macro precision", scores["macro_precision"]),
        ("macro recall", scores["macro_recall"]),
        ("macro f1", scores["macro_f1"]),
        ("lowest recall", scores["min_recall"]),
    ]
    if train_counts is not None:
        groups = table["group"]
        for name, rule in (
            ("many", f"> {many_threshold}"),
            ("medium", f"{few_threshold}..{many_threshold}"),
            ("few", f"< {few_threshold}"),
        ):
            k = int((groups == name).sum())
            summary.append((f"{name}-shot recall ({rule} train, {k} classes)", scores[name]))
    lw = max(len(s[0]) for s in summary)
    lines += [f"{name:<{lw}}  {fmt(v)}" for name, v in summary]
    return "\n".join(lines)
