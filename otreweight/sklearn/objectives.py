r"""The numerical part of :class:`~otreweight.sklearn.OTSampleWeighter`, on numpy / scipy.sparse rows.

Features are float64 arrays or CSR matrices (:func:`as_features`); the targets are the meta rows or
their class means (:func:`class_means`). The cost between rows and targets is
:math:`\alpha\,(1-\cos) + (1-\alpha)\,d\,[y \ne y']` (:func:`ot_cost`, :mod:`otreweight.cost`),
the cosine computed from the rows as given, sparse ones included (:func:`cosine`). The three
objectives return an :class:`ObjectiveResult`: :func:`class_conditional` is
:func:`otreweight.transport.class_conditional_blocks` (what ``OTReweighter`` solves),
:func:`kl_regularized` is :func:`otreweight.transport.semi_relaxed_ot` and :func:`descent` runs
gradient passes on softmax scores against :func:`otreweight.transport.entropic_ot`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import row_norms, safe_sparse_dot

from .._errors import OTReweightError
from ..cost import label_distance
from ..transport import (
    OTConvergenceWarning,
    balanced_target_mass,
    class_conditional_blocks,
    entropic_ot,
    semi_relaxed_ot,
)


@dataclass
class ObjectiveResult:
    """The masses of the weighted rows (summing to 1) and how the solve went (the weighter's
    ``ot_values_``, ``n_iter_``, ``converged_`` and ``n_backtracks_``)."""

    mass: np.ndarray
    ot_values: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = True
    n_backtracks: int = 0


# -- features and targets ---------------------------------------------------------------------------
def draw_meta(y_enc: np.ndarray, n_classes: int, per_class: int, exclude: bool, rng) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a balanced meta set drawn from the training rows, and of the weighted rows.

    Per class ``c`` with ``n_c`` rows, ``min(per_class, n_c // 2)`` rows are drawn when
    ``exclude`` (so that at least as many stay weighted), ``min(per_class, n_c)`` otherwise; a
    class with a single row lends it to the meta set and keeps it weighted.
    """
    meta, shared = [], []
    for c in range(n_classes):
        rows = np.flatnonzero(y_enc == c)
        take = min(per_class, rows.size // 2 if exclude else rows.size)
        if take == 0:  # a one-row class: it is its own prototype and stays weighted
            take = 1
            shared.append(rows)
        meta.append(rng.choice(rows, size=take, replace=False))
    meta_idx = np.sort(np.concatenate(meta))
    if exclude:
        keep = np.ones(y_enc.shape[0], dtype=bool)
        keep[meta_idx] = False
        if shared:
            keep[np.concatenate(shared)] = True
        weighted_idx = np.flatnonzero(keep)
    else:
        weighted_idx = np.arange(y_enc.shape[0])
    return meta_idx, weighted_idx


def as_features(Z, what: str = "the transformer's output"):
    """``Z`` as float64: a CSR matrix if sparse, else a C-contiguous 2-d array; finite."""
    if sp.issparse(Z):
        Z = sp.csr_matrix(Z, dtype=np.float64) if not (sp.isspmatrix_csr(Z) and Z.dtype == np.float64) else Z
        finite = np.isfinite(Z.data).all()
    else:
        Z = np.ascontiguousarray(np.asarray(Z, dtype=np.float64))
        finite = Z.ndim == 2 and np.isfinite(Z).all()
    if Z.ndim != 2 or not finite:
        raise OTReweightError(f"{what} must be a finite 2-d array; impute NaN or remove inf values before it")
    return Z


def class_means(Z, labels: np.ndarray, classes: np.ndarray):
    """Mean row of ``Z`` for each class of ``classes`` (sparse in, sparse out), in that order."""
    pos = {c: k for k, c in enumerate(classes)}
    rows = np.array([pos[c] for c in labels.tolist()], dtype=np.int64)
    counts = np.bincount(rows, minlength=len(classes)).astype(np.float64)
    avg = sp.csr_matrix((1.0 / counts[rows], (rows, np.arange(labels.shape[0]))), shape=(len(classes), labels.shape[0]))
    out = avg @ Z
    return out.tocsr() if sp.issparse(out) else np.asarray(out)


def stack(parts):
    """The row blocks ``parts`` stacked: CSR if any is sparse, else a dense array."""
    if any(sp.issparse(p) for p in parts):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.vstack(parts)


def targets_of(kind: str, Z, meta_Z, meta_y: np.ndarray, weighted_idx: np.ndarray, y_w: np.ndarray,
               missing: np.ndarray, n_classes: int):
    """The targets' features and labels: the meta rows (``"whole"``) or their class means
    (``"prototype"``); a class of ``missing`` (no meta row) contributes its own weighted rows."""
    t_feats, t_labels = [meta_Z], [np.asarray(meta_y, dtype=np.int64)]
    for c in missing:
        rows = weighted_idx[y_w == c]
        t_feats.append(Z[rows])
        t_labels.append(np.full(rows.shape[0], c, dtype=np.int64))
    t_feats, t_labels = stack(t_feats), np.concatenate(t_labels)
    if kind == "prototype":
        return class_means(t_feats, t_labels, np.arange(n_classes)), np.arange(n_classes)
    return t_feats, t_labels


# -- the cost ---------------------------------------------------------------------------------------
def cosine(A, B) -> np.ndarray:
    r"""Dense :math:`\cos(a_i, b_j)`, ``(n, m)``, for dense or sparse rows, without normalising a copy.

    :math:`(A B^\top)_{ij} / (\max(\|a_i\|, 10^{-12})\,\max(\|b_j\|, 10^{-12}))`, the convention of
    ``torch.nn.functional.normalize`` (a zero row has cosine 0 with everything). For sparse ``A``
    the only ``(n, m)`` array is the result: ``A`` itself is read in place.
    """
    prod = safe_sparse_dot(A, B.T, dense_output=True)
    prod = np.asarray(prod.toarray() if sp.issparse(prod) else prod, dtype=np.float64)
    na = np.maximum(np.sqrt(row_norms(A, squared=True)), 1e-12)
    nb = np.maximum(np.sqrt(row_norms(B, squared=True)), 1e-12)
    prod /= na[:, None]
    prod /= nb[None, :]
    return prod


def ot_cost(Z, y: np.ndarray, T, t_labels: np.ndarray, n_classes: int, cost: str, alpha: float, label_scale: str,
            keep: np.ndarray | None = None) -> np.ndarray:
    r"""The cost ``(n, m)`` of :mod:`otreweight.cost` between rows (labels ``y``) and targets ``T``.

    ``"combined"``: :math:`\alpha(1-\cos) + (1-\alpha)\,d\,[y \ne y']`, :math:`d` the label distance
    of ``label_scale``; ``"feature"``: :math:`1-\cos`; ``"label"``: :math:`d\,[y \ne y']`. With
    ``keep``, the cosine is computed for every row of ``Z`` (sparse rows read in place, no copy)
    and the rows ``keep`` (those of ``y``) are then taken from the dense result.
    """
    diff = (y[:, None] != t_labels[None, :]).astype(np.float64)
    d = label_distance(n_classes, label_scale)
    if cost == "label":
        return diff * d
    cos = cosine(Z, T)
    if keep is not None and keep.shape[0] != cos.shape[0]:
        cos = cos[keep]
    feat = 1.0 - cos
    if cost == "feature":
        return feat
    a = float(alpha)
    return a * feat + (1.0 - a) * d * diff


# -- the objectives ---------------------------------------------------------------------------------
def class_conditional(Z, rows: np.ndarray, y: np.ndarray, T, t_labels: np.ndarray, n_classes: int, *, cost: str,
                      alpha: float, label_scale: str, eps: float, lam: float, tol: float,
                      max_iter: int) -> ObjectiveResult:
    r"""``"class_conditional"``: :func:`~otreweight.transport.class_conditional_blocks` on the rows
    ``rows`` of ``Z`` (labels ``y``) against the targets ``T`` (labels ``t_labels``).

    Every class gets exactly :math:`1/K` of the mass and, inside it,
    :math:`\arg\min \mathrm{OT}_\varepsilon(a_c, b_c) + \lambda\,\mathrm{KL}(a_c\,\|\,\text{uniform})`
    against its own targets; the cost is only formed block by block (:func:`ot_cost` of a group of
    classes' rows and targets; one target per class: each row's cost to it, the explicit minimiser).
    A solve that stops at ``max_iter`` gives one :class:`~sklearn.exceptions.ConvergenceWarning`.
    """
    def block(r, c):
        r, c = r.numpy(), c.numpy()
        return torch.from_numpy(ot_cost(Z[rows[r]], y[r], T[c], t_labels[c], n_classes, cost, alpha, label_scale))

    def pair(r, c):  # the cost of row r[k] to target c[k], one target at a time
        r, c = r.numpy(), c.numpy()
        out = np.empty(r.shape[0], dtype=np.float64)
        for j in np.unique(c):
            at = np.flatnonzero(c == j)
            out[at] = block(torch.from_numpy(r[at]), torch.from_numpy(c[at[:1]]))[:, 0].numpy()
        return torch.from_numpy(out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)  # one warning in the weighter's terms, below
        res = class_conditional_blocks(block, pair, torch.from_numpy(y.astype(np.int64)),
                                       torch.from_numpy(t_labels.astype(np.int64)), n_classes, eps=eps, lam=lam,
                                       tol=tol, max_iter=max_iter)
    if not res.converged:
        warnings.warn(ConvergenceWarning(
            f"the class_conditional solve stopped at sinkhorn_max_iter={max_iter} before reaching "
            f"sinkhorn_tol={tol:g} in at least one class; raise sinkhorn_max_iter"), stacklevel=4)  # here, OTSampleWeighter._solve, fit, the caller of fit
    mass = res.weights.numpy()
    return ObjectiveResult(mass / mass.sum(), [float(res.value)], res.n_iter, res.converged)


def kl_regularized(cost: torch.Tensor, y: np.ndarray, t_labels: np.ndarray, n_classes: int, init: str, *,
                   eps: float, lam: float, tol: float, max_iter: int) -> ObjectiveResult:
    r"""``"kl_regularized"``: :math:`\arg\min_a \mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\,\|\,p)`
    (:func:`~otreweight.transport.semi_relaxed_ot`), :math:`p` class-balanced (``init="balanced"``)
    or uniform, :math:`b` giving every class's targets the same total mass."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if init == "balanced":
        prior = 1.0 / (np.count_nonzero(counts) * counts[y])
    else:
        prior = np.full(y.shape[0], 1.0 / y.shape[0])
    b = balanced_target_mass(torch.from_numpy(t_labels.astype(np.int64)), n_classes)
    res = semi_relaxed_ot(cost, torch.from_numpy(prior), b, eps=eps, lam=lam, tol=tol, max_iter=max_iter)
    mass = res.weights.numpy()
    return ObjectiveResult(mass / mass.sum(), [float(res.value)], res.n_iter, res.converged)


def _value_and_grad(s: torch.Tensor, cost: torch.Tensor, b: torch.Tensor, eps: float, tol: float, max_iter: int):
    """OT value of ``softmax(s)`` and its gradient with respect to ``s`` (POT's envelope gradient)."""
    s = s.detach().requires_grad_(True)
    res = entropic_ot(cost, torch.softmax(s, dim=0), b, eps=eps, tol=tol, max_iter=max_iter)
    (grad,) = torch.autograd.grad(res.value, s)
    return float(res.value.detach()), grad


def ot_minimum(cost: torch.Tensor, b: torch.Tensor, eps: float) -> float:
    r""":math:`\min_a \mathrm{OT}_\varepsilon(a, b) = \sum_j b_j\,(\varepsilon\log b_j - \varepsilon
    \log\sum_i e^{-C_{ij}/\varepsilon})` (each target spreads its mass by a softmax)."""
    e = eps
    return float((b * (e * torch.log(b) - e * torch.logsumexp(-cost / e, dim=0))).sum())


def descent(cost: torch.Tensor, s: torch.Tensor, b: torch.Tensor, n_batches: int, rng, *, eps: float,
            learning_rate: float, max_iter: int, tol: float, n_iter_no_change: int, sinkhorn_tol: float,
            sinkhorn_max_iter: int, verbose: bool = False) -> ObjectiveResult:
    """``"descent"``: gradient passes on the scores ``s`` of ``softmax(s)`` to lower
    :math:`\\mathrm{OT}_\\varepsilon` against the target masses ``b``, with the stopping rules of
    :class:`~otreweight.sklearn.OTSampleWeighter` (full batch: a step that raises the value is undone
    and the rate halved; ``n_batches > 1``: shuffled mini-batches). A stop before convergence gives
    one :class:`~sklearn.exceptions.ConvergenceWarning`."""
    sink = dict(eps=eps, tol=sinkhorn_tol, max_iter=sinkhorn_max_iter)
    n_w = cost.shape[0]
    lr = learning_rate * n_w / n_batches
    ot_values, n_iter, n_backtracks = [], 0, 0
    reason = "max_iter"
    best, stale, gap0 = math.inf, 0, None
    passes = range(max_iter)
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        passes = bar = tqdm(passes, desc="OT re-weighting", unit="pass")
    gap = math.nan
    if n_batches == 1:
        value, grad = _value_and_grad(s, cost, b, **sink)
        opt = ot_minimum(cost, b, eps)
        gap0 = value - opt
        ot_values.append(value)
    for _ in passes:
        if n_batches == 1:
            if value - opt <= tol * gap0:
                reason = None
                break
            n_iter += 1
            cand = s - lr * grad
            v_c, g_c = _value_and_grad(cand, cost, b, **sink)
            if not v_c <= value:  # undo the step, halve the rate: not a pass without progress
                lr *= 0.5
                n_backtracks += 1
                continue
            s, value, grad = cand, v_c, g_c
            gap = value - opt
        else:
            n_iter += 1
            value = gap = 0.0
            for batch in torch.tensor_split(torch.from_numpy(rng.permutation(n_w)), n_batches):
                cb = cost[batch]
                v, g = _value_and_grad(s[batch], cb, b, **sink)
                share = batch.shape[0] / n_w
                value += v * share
                gap += (v - ot_minimum(cb, b, eps)) * share
                s[batch] = s[batch] - lr * g
            if gap0 is None:
                gap0 = gap
        ot_values.append(value)
        if bar is not None:
            bar.set_postfix(ot=f"{value:.5f}")
        if gap <= tol * gap0 and n_batches > 1:
            reason = None
            break
        total = ot_values[0] - min(best, value)
        if value < best - tol * total or not math.isfinite(best):
            best, stale = value, 0
        else:
            stale += 1
            if stale >= n_iter_no_change:
                reason = "n_iter_no_change"
                break
    else:
        if n_batches == 1 and value - opt <= tol * gap0:
            reason = None
    if bar is not None:
        bar.close()
    if reason is not None:
        gap = (value - opt) if n_batches == 1 else gap
        rel = gap / gap0 if gap0 else 0.0
        warnings.warn(ConvergenceWarning(
            f"objective='descent' stopped by {reason} after {n_iter} passes before convergence: the OT value "
            f"is {rel:.3g} of its starting gap above its minimum (tol={tol:g}); raise max_iter / "
            "n_iter_no_change or use a solved objective ('class_conditional', 'kl_regularized')"), stacklevel=4)  # here, OTSampleWeighter._solve, fit, the caller of fit
    mass = torch.softmax(s.to(torch.float64), dim=0).numpy()
    return ObjectiveResult(mass, ot_values, n_iter, reason is None, n_backtracks)
