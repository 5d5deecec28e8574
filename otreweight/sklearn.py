r"""OT re-weighting for scikit-learn users: a sample weighter and a meta-estimator.

:class:`OTSampleWeighter` learns one weight per training example by minimising, over the weights
:math:`w` on the simplex, the entropic OT distance between the weighted training set and uniform
mass on balanced meta targets,

.. math::

    \min_{w \in \Delta^n}\ \mathrm{OT}_\varepsilon\Big(\sum_{i=1}^n w_i\,\delta_{(z_i, y_i)},\;
        \frac1m \sum_{j=1}^m \delta_{(z'_j, y'_j)}\Big),
    \qquad w = \mathrm{softmax}(s),

where :math:`z = T(x)` are the features after a transformer :math:`T` (a
:class:`~sklearn.preprocessing.StandardScaler` by default), the cost between an example and a
target is :math:`\alpha\,(1-\cos(z_i, z'_j)) + (1-\alpha)\,[y_i \ne y'_j]` (see
:mod:`otreweight.cost`) and the targets are the per-class means of the meta features
(``"prototype"``) or every meta example (``"whole"``, see :mod:`otreweight.targets`). The
optimisation is :class:`otreweight.reweighter.OTReweighter`'s: gradient steps on the scores
:math:`s`, the gradient of the OT value being POT's envelope gradient (:mod:`otreweight.transport`).

:class:`OTReweightedClassifier` fits the weighter, then a clone of any scikit-learn classifier
whose ``fit`` accepts ``sample_weight``, with the learned weights.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, has_fit_parameter, validate_data

from ._errors import OTReweightError, check_choice, check_positive
from .cost import COSTS, LABEL_SCALES, cost_matrix
from .metrics import (
    classification_report_imbalanced,
    geometric_mean_score,
    imbalanced_scores,
    per_class_table,
)
from .reweighter import OTReweighter
from .targets import build_targets
from .transport import entropic_ot

__all__ = [
    "MetaSetWarning",
    "OTReweightedClassifier",
    "OTSampleWeighter",
    "classification_report_imbalanced",
    "geometric_mean_score",
    "imbalanced_scores",
    "per_class_table",
]

SKLEARN_TARGETS = ("prototype", "whole")
SKLEARN_INITS = ("uniform", "balanced")


class MetaSetWarning(UserWarning):
    """Issued when :class:`OTSampleWeighter` draws its meta set from the training data.

    Like scikit-learn's own warnings it comes again with every fit (a grid search refits many
    times); silence it with ``warnings.filterwarnings("ignore", category=MetaSetWarning)``.
    """


def _check_int(name: str, value, low: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise OTReweightError(f"{name} must be an integer >= {low}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _draw_meta(y_enc: np.ndarray, n_classes: int, per_class: int, exclude: bool, rng) -> tuple[np.ndarray, np.ndarray]:
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


class OTSampleWeighter(BaseEstimator):
    r"""Per-example weights learned by entropic optimal transport to a balanced meta set.

    ``fit`` minimises :math:`\mathrm{OT}_\varepsilon(\mathrm{softmax}(s), \text{uniform on the meta
    targets})` over one score :math:`s_i` per weighted training example (see the module
    docstring), by gradient steps through :meth:`otreweight.OTReweighter.step`.

    **What the steps converge to.** Over the weights alone the minimiser is explicit: each target
    :math:`j` spreads its mass :math:`1/m` over the examples by a softmax of
    :math:`-C_{ij}/\varepsilon`, so :math:`w^*_i = \frac1m\sum_j \mathrm{softmax}_i(-C_{\cdot j}/
    \varepsilon)`. The label cost makes each class receive about :math:`1/K` of the mass (the
    re-balancing); within a class :math:`w^*` favours the examples closest to the targets, the
    more so the smaller :math:`\varepsilon` (as :math:`\varepsilon \to 0` each target's mass
    lands on its nearest example). Starting from ``init``, the gradient steps move towards
    :math:`w^*` and are stopped early, which keeps part of the starting weights.

    **Stopping rule.** At most ``max_iter`` passes over the weighted examples (one step per
    batch). A pass makes progress when its OT value (the mean of its batches' values) is below
    the best so far by more than ``tol`` times the total decrease so far; after
    ``n_iter_no_change`` passes in a row without progress the optimisation stops. On the full
    batch, a step that raised the OT value is undone and the learning rate halved, so the
    returned weights never have a higher OT value than the last accepted ones. Measured on half of
    digits made long-tailed (10 classes, imbalance factor 20, class frequencies 0.014 to 0.30;
    ``examples/sklearn_imbalanced.py``, seeds 0-2), the defaults stopped after 36-76 passes with
    class masses between 0.064 and 0.123 (:math:`1/K = 0.1`) and the heaviest example of a class
    at 1.1 to 2.9 times its class's mean weight.

    **Learning rate.** ``learning_rate`` is in units independent of the batch size: the step on
    the scores of a batch of :math:`b` examples is ``learning_rate * b`` times the gradient, so a
    score moves by about ``learning_rate`` times the (centred) dual potential of its example
    times :math:`b\,w_i`. Much larger values make the steps overshoot (the backtracking then
    shrinks them on the full batch).

    Parameters
    ----------
    targets : {"prototype", "whole"}, default="prototype"
        Meta targets: one per class (the mean of that class's meta features) or every meta example.
    n_meta_per_class : int, default=10
        Size per class of the meta set drawn from the training data when ``fit`` gets no
        ``meta_X``. With ``exclude_meta=True`` at most half of each class is drawn (rounded
        down; a class with one example shares it between the meta set and the weighted examples).
    exclude_meta : bool, default=True
        Whether a drawn meta set is left out of the weighted examples (its rows get weight 0 in
        :attr:`weights_`; see :meth:`sample_weight` for what they receive as ``sample_weight``).
    transformer : transformer or None, default=None
        Maps ``X`` to the features the cost is computed on; cloned and fitted on the training
        ``X``. ``None`` means :class:`~sklearn.preprocessing.StandardScaler`. With a transformer,
        ``X`` may contain NaN if the transformer removes them (e.g. a pipeline with an imputer).
    eps : float, default=0.1
        Entropic regularisation :math:`\varepsilon`.
    cost : {"combined", "feature", "label"}, default="combined"
        The cost between examples and targets (:mod:`otreweight.cost`).
    alpha : float, default=0.5
        Weight of the feature cost in ``"combined"``.
    label_scale : {"unit", "reference"}, default="unit"
        Label cost between different classes: 1 (``"unit"``) or :math:`2/K` (``"reference"``, the
        authors' CIFAR code). With ``"reference"`` the label term shrinks as ``K`` grows and may be
        too weak to re-balance: on digits (K=10, IF 20) a 6-example class kept 1% of the mass.
    init : {"uniform", "balanced"}, default="uniform"
        Starting weights: equal for every example, or equal mass per class
        (:math:`1/(K n_c)` per example of class :math:`c`).
    learning_rate : float, default=1.0
        Step size on the scores, in batch-size-free units (see above).
    batch_size : int or None, default=None
        ``None`` optimises on all weighted examples at once (full batch); an integer splits every
        pass into shuffled mini-batches of about that size, each moved towards the meta targets
        on its own (the paper's scheme).
    max_iter : int, default=100
        Maximum number of passes over the weighted examples (one step per batch and pass).
    tol : float, default=1e-3
        Relative progress a pass must make (see the stopping rule); ``0`` counts any decrease.
    n_iter_no_change : int, default=3
        Passes in a row without progress that stop the optimisation.
    sinkhorn_tol : float, default=1e-6
        Tolerance of POT's Sinkhorn solver.
    sinkhorn_max_iter : int, default=1000
        Iteration cap of POT's Sinkhorn solver.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of the meta set and the order of the mini-batches.
    verbose : bool, default=False
        Show a ``tqdm`` progress bar over the passes.

    Attributes
    ----------
    weights_ : ndarray of shape (n_samples,)
        The learned mass of each training example: non-negative, summing to 1 over the
        weighted examples, 0 on the rows of a drawn meta set that were excluded.
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    meta_mask_ : ndarray of bool, shape (n_samples,)
        True on the training rows drawn into the meta set and excluded from the weighted examples.
    meta_drawn_ : bool
        Whether the meta set was drawn from the training data.
    meta_indices_ : ndarray of int or None
        Rows of ``X`` drawn into the meta set (``None`` when ``meta_X`` was given).
    class_mass_ : ndarray of shape (n_classes,)
        Total learned mass of each class (sums to 1).
    ot_values_ : list of float
        The OT value of each accepted pass (mean of its batches' values before their update); on
        the full batch the last entry is the value of the returned weights.
    n_iter_ : int
        Number of passes run (undone ones included).
    n_backtracks_ : int
        Number of full-batch steps undone because they raised the OT value.
    transformer_ : transformer
        The fitted feature transformer.
    reweighter_ : OTReweighter
        The core re-weighter holding the learned scores.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen in ``fit`` (only when ``X`` has string column names).

    Examples
    --------
    >>> from sklearn.datasets import load_wine
    >>> from otreweight.sklearn import OTSampleWeighter
    >>> X, y = load_wine(return_X_y=True)
    >>> w = OTSampleWeighter(random_state=0).fit(X, y).sample_weight()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        targets="prototype",
        n_meta_per_class=10,
        exclude_meta=True,
        transformer=None,
        eps=0.1,
        cost="combined",
        alpha=0.5,
        label_scale="unit",
        init="uniform",
        learning_rate=1.0,
        batch_size=None,
        max_iter=100,
        tol=1e-3,
        n_iter_no_change=3,
        sinkhorn_tol=1e-6,
        sinkhorn_max_iter=1000,
        random_state=None,
        verbose=False,
    ):
        self.targets = targets
        self.n_meta_per_class = n_meta_per_class
        self.exclude_meta = exclude_meta
        self.transformer = transformer
        self.eps = eps
        self.cost = cost
        self.alpha = alpha
        self.label_scale = label_scale
        self.init = init
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.sinkhorn_tol = sinkhorn_tol
        self.sinkhorn_max_iter = sinkhorn_max_iter
        self.random_state = random_state
        self.verbose = verbose

    # -- scikit-learn plumbing -------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = self.transformer is not None
        return tags

    def _check_params(self) -> None:
        check_choice("targets", self.targets, SKLEARN_TARGETS)
        check_choice("init", self.init, SKLEARN_INITS)
        check_choice("cost", self.cost, COSTS)
        check_choice("label_scale", self.label_scale, LABEL_SCALES)
        _check_int("n_meta_per_class", self.n_meta_per_class, 1)
        _check_int("max_iter", self.max_iter, 0)
        _check_int("batch_size", self.batch_size, 1, allow_none=True)
        _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        _check_int("sinkhorn_max_iter", self.sinkhorn_max_iter, 1)
        check_positive("eps", self.eps)
        check_positive("learning_rate", self.learning_rate)
        check_positive("sinkhorn_tol", self.sinkhorn_tol)
        if not isinstance(self.tol, numbers.Real) or not math.isfinite(self.tol) or self.tol < 0:
            raise OTReweightError(f"tol must be a finite number >= 0, got {self.tol!r}")
        if not isinstance(self.alpha, numbers.Real) or not 0.0 <= self.alpha <= 1.0:
            raise OTReweightError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        if self.transformer is not None and not (
            hasattr(self.transformer, "fit") and hasattr(self.transformer, "transform")
        ):
            raise OTReweightError(
                f"transformer must be a scikit-learn transformer with fit and transform, got {self.transformer!r}"
            )

    def _features(self, Z) -> torch.Tensor:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or not np.isfinite(Z).all():
            raise OTReweightError(
                "the transformer's output must be a finite 2-d array; impute NaN or remove inf values before it"
            )
        return torch.from_numpy(np.ascontiguousarray(Z))

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y, meta_X=None, meta_y=None):
        """Learn one weight per training example.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Training class labels (at least two classes).
        meta_X : array-like of shape (n_meta, n_features), optional
            A balanced meta set with at least one example of every class of ``y``. If omitted
            (with ``meta_y``), one is drawn from ``(X, y)``: up to ``n_meta_per_class`` rows per
            class, seeded by ``random_state``, with a :class:`MetaSetWarning`.
        meta_y : array-like of shape (n_meta,), optional
            Labels of ``meta_X``.

        Returns
        -------
        self : OTSampleWeighter
        """
        self._check_params()
        finite = "allow-nan" if self.transformer is not None else True
        raw_X = X
        X, y = validate_data(self, X, y, dtype=None if self.transformer is not None else "numeric",
                             ensure_all_finite=finite, ensure_min_samples=2)
        # A user transformer sees X as given (e.g. a DataFrame for a ColumnTransformer).
        if self.transformer is None:
            raw_X = X
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise OTReweightError(
                f"y has a single class ({self.classes_[0]!r}); OT re-weighting needs at least 2 classes"
            )
        rng = check_random_state(self.random_state)

        if (meta_X is None) != (meta_y is None):
            raise OTReweightError("give both meta_X and meta_y, or neither (to draw a meta set from X, y)")
        n = X.shape[0]
        if meta_X is None:
            meta_idx, weighted_idx = _draw_meta(y_enc, n_classes, self.n_meta_per_class, self.exclude_meta, rng)
            warnings.warn(
                f"no meta set given: drew a balanced meta set of up to {self.n_meta_per_class} examples per class "
                f"from the training data{' and excluded it from the weighted examples' if self.exclude_meta else ''}"
                "; pass meta_X, meta_y to fit to use your own",
                MetaSetWarning,
                stacklevel=2,
            )
            meta_X_raw, meta_y_enc = _safe_indexing(raw_X, meta_idx), y_enc[meta_idx]
            self.meta_drawn_, self.meta_indices_ = True, meta_idx
        else:
            meta_X_arr = check_array(meta_X, dtype=None if self.transformer is not None else "numeric",
                                     ensure_all_finite=finite, input_name="meta_X")
            meta_X_raw = meta_X if self.transformer is not None else meta_X_arr
            meta_y_arr = np.asarray(meta_y)
            if meta_y_arr.ndim != 1 or meta_y_arr.shape[0] != meta_X_arr.shape[0]:
                raise OTReweightError(
                    f"meta_y must be 1-d with one label per row of meta_X ({meta_X_arr.shape[0]}), got shape {meta_y_arr.shape}"
                )
            if meta_X_arr.shape[1] != X.shape[1]:
                raise OTReweightError(
                    f"meta_X has {meta_X_arr.shape[1]} features but X has {X.shape[1]}; give both the same columns"
                )
            unknown = np.setdiff1d(meta_y_arr, self.classes_)
            if unknown.size:
                raise OTReweightError(
                    f"meta_y has class(es) {unknown[:10].tolist()} absent from y; the meta set may only hold training classes"
                )
            meta_y_enc = np.searchsorted(self.classes_, meta_y_arr)
            missing = np.setdiff1d(np.arange(n_classes), meta_y_enc)
            if missing.size:
                raise OTReweightError(
                    f"the meta set has no example of class(es) {self.classes_[missing][:10].tolist()}; "
                    "give at least one meta example per class"
                )
            weighted_idx = np.arange(n)
            self.meta_drawn_, self.meta_indices_ = False, None

        self.transformer_ = clone(self.transformer) if self.transformer is not None else StandardScaler()
        self.transformer_.fit(raw_X, y)
        feats = self._features(self.transformer_.transform(raw_X))[weighted_idx]
        meta_feats = self._features(self.transformer_.transform(meta_X_raw))
        labels = torch.from_numpy(y_enc[weighted_idx].astype(np.int64))
        meta_labels = torch.from_numpy(np.asarray(meta_y_enc, dtype=np.int64))
        targets = build_targets(self.targets, meta_feats, meta_labels, n_classes)

        n_w = weighted_idx.shape[0]
        n_batches = 1 if self.batch_size is None else max(1, math.ceil(n_w / self.batch_size))
        rw = OTReweighter(
            labels,
            n_classes,
            init="uniform",
            eps=self.eps,
            cost=self.cost,
            alpha=self.alpha,
            label_scale=self.label_scale,
            steps=1,
            lr=self.learning_rate * n_w / n_batches,
            weighting="normalized",
            tol=self.sinkhorn_tol,
            max_iter=self.sinkhorn_max_iter,
        )
        # Scores are log-weights up to a constant: work in float64 from the start.
        counts = np.bincount(y_enc[weighted_idx], minlength=n_classes).astype(np.float64)
        if self.init == "balanced":
            start = -np.log(counts[y_enc[weighted_idx]])
        else:
            start = np.zeros(n_w)
        rw.scores = torch.from_numpy(start)

        self._optimise(rw, feats, labels, targets, n_batches, rng)
        self.reweighter_ = rw

        mass = torch.softmax(rw.scores.to(torch.float64), dim=0).numpy()
        self.weights_ = np.zeros(n, dtype=np.float64)
        self.weights_[weighted_idx] = mass
        self.meta_mask_ = np.zeros(n, dtype=bool)
        if self.meta_drawn_:
            self.meta_mask_[np.setdiff1d(np.arange(n), weighted_idx)] = True
        self.class_mass_ = np.bincount(y_enc, weights=self.weights_, minlength=n_classes)
        self._y_enc = y_enc
        if not np.isfinite(self.weights_).all():
            raise OTReweightError("the learned weights are not finite; lower learning_rate or raise eps")
        return self

    def _optimise(self, rw: OTReweighter, feats, labels, targets, n_batches: int, rng) -> None:
        """Passes of :meth:`OTReweighter.step` over the weighted examples, with the stopping rule.

        Full batch: a step that raised the OT value is undone and the learning rate halved.
        A pass makes progress when its OT value is below the best so far by more than ``tol``
        times the total decrease so far; ``n_iter_no_change`` passes without progress stop the
        optimisation, as do ``max_iter`` passes.
        """
        n_w = labels.shape[0]
        all_idx = torch.arange(n_w)
        self.ot_values_ = []
        self.n_iter_ = 0
        self.n_backtracks_ = 0
        best = math.inf
        stale = 0
        accepted = rw.scores.clone()
        redo = False
        passes = range(self.max_iter)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            passes = bar = tqdm(passes, desc="OT re-weighting", unit="pass")
        for _ in passes:
            self.n_iter_ += 1
            if n_batches == 1:
                before = rw.scores.clone()
                rw.step(all_idx, feats, labels, targets)
                value = rw.last_ot_value
                if redo:  # value of the accepted iterate, recomputed; the step used the smaller rate
                    redo = False
                    continue
                if self.ot_values_ and value > self.ot_values_[-1]:
                    rw.scores.copy_(accepted)
                    rw.lr *= 0.5
                    self.n_backtracks_ += 1
                    redo = True
                    stale += 1
                    if stale >= self.n_iter_no_change:
                        break
                    continue
                accepted = before
            else:
                value = 0.0
                for batch in torch.tensor_split(torch.from_numpy(rng.permutation(n_w)), n_batches):
                    rw.step(batch, feats[batch], labels[batch], targets)
                    value += rw.last_ot_value * batch.shape[0] / n_w
            self.ot_values_.append(value)
            if bar is not None:
                bar.set_postfix(ot=f"{value:.5f}")
            total = self.ot_values_[0] - min(best, value)
            if value < best - self.tol * total or not math.isfinite(best):
                best, stale = value, 0
            else:
                stale += 1
                if stale >= self.n_iter_no_change:
                    break
        if n_batches == 1 and self.ot_values_:
            # The last step was never evaluated: keep it only if it did not raise the OT value.
            cost = cost_matrix(self.cost, feats, labels, targets.features.to(torch.float64), targets.labels,
                               targets.num_classes, self.alpha, self.label_scale)
            a = torch.softmax(rw.scores.to(torch.float64), dim=0)
            final = float(entropic_ot(cost, a, eps=self.eps, tol=self.sinkhorn_tol,
                                      max_iter=self.sinkhorn_max_iter).value)
            if final > self.ot_values_[-1]:
                rw.scores.copy_(accepted)
            else:
                self.ot_values_.append(final)
        if bar is not None:
            bar.close()

    def sample_weight(self, meta_weight="class_mean"):
        """The learned weights scaled for ``sample_weight``: mean 1 over the weighted examples.

        Parameters
        ----------
        meta_weight : "class_mean" or float, default="class_mean"
            What the rows of a drawn, excluded meta set receive: the mean weight of the weighted
            examples of their class (``"class_mean"``), or a fixed value (``0`` drops them).

        Returns
        -------
        ndarray of shape (n_samples,)
            ``weights_ * n_weighted`` on the weighted examples, ``meta_weight`` on the meta rows.
        """
        check_is_fitted(self)
        weighted = ~self.meta_mask_
        w = self.weights_ * weighted.sum()
        if self.meta_mask_.any():
            if isinstance(meta_weight, str):
                check_choice("meta_weight", meta_weight, ("class_mean",))
                k = len(self.classes_)
                sums = np.bincount(self._y_enc[weighted], weights=w[weighted], minlength=k)
                cnt = np.bincount(self._y_enc[weighted], minlength=k)
                means = np.divide(sums, cnt, out=np.ones(k), where=cnt > 0)
                w[self.meta_mask_] = means[self._y_enc[self.meta_mask_]]
            else:
                v = float(meta_weight)
                if not math.isfinite(v) or v < 0:
                    raise OTReweightError(f"meta_weight must be 'class_mean' or a finite number >= 0, got {meta_weight!r}")
                w[self.meta_mask_] = v
        return w


def _estimator_has(attr: str):
    """For available_if: the fitted estimator, else the unfitted one, has ``attr``."""

    def check(self):
        est = self.estimator_ if hasattr(self, "estimator_") else self._base_estimator()
        return hasattr(est, attr)

    return check


class OTReweightedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Fit a classifier with per-example weights learned by OT re-weighting.

    ``fit`` fits an :class:`OTSampleWeighter` on ``(X, y)``, then a clone of ``estimator`` on
    the same ``(X, y)`` with ``sample_weight = weighter_.sample_weight(meta_weight)`` (mean 1 over
    the weighted examples). ``predict``, ``predict_proba``, ``predict_log_proba`` and
    ``decision_function`` delegate to the fitted clone when it has them.

    Parameters
    ----------
    estimator : classifier or None, default=None
        Any classifier whose ``fit`` takes ``sample_weight`` (or a :class:`~sklearn.pipeline.Pipeline`
        whose last step does). ``None`` means ``LogisticRegression(max_iter=1000)``. It receives
        ``X`` as given (validated; a DataFrame stays one): the weighter's transformer only shapes
        the OT features.
    weighter : OTSampleWeighter or None, default=None
        The weighter to clone and fit; ``None`` means ``OTSampleWeighter()``. Tune its parameters
        with nested names, e.g. ``weighter__eps`` (this needs an explicit ``OTSampleWeighter``, as
        ``estimator__C`` needs an explicit estimator: None has no parameters to set).
    meta_weight : "class_mean" or float, default="class_mean"
        ``sample_weight`` of the meta rows drawn from ``X`` (see :meth:`OTSampleWeighter.sample_weight`).
    random_state : int, RandomState instance or None, default=None
        If not None, seeds the weighter (overriding its own ``random_state``) and fills the
        estimator's ``random_state`` when the estimator has one left at None, so that one seed
        makes the whole fit deterministic.

    Attributes
    ----------
    weighter_ : OTSampleWeighter
        The fitted weighter.
    estimator_ : classifier
        The fitted clone of ``estimator``.
    sample_weight_ : ndarray of shape (n_samples,)
        The weights ``estimator_`` was fitted with.
    classes_ : ndarray of shape (n_classes,)
        Class labels (``estimator_.classes_``).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen in ``fit`` (only when ``X`` has string column names).
    """

    def __init__(self, estimator=None, *, weighter=None, meta_weight="class_mean", random_state=None):
        self.estimator = estimator
        self.weighter = weighter
        self.meta_weight = meta_weight
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        w = self.weighter if self.weighter is not None else OTSampleWeighter()
        tags.input_tags.allow_nan = w.__sklearn_tags__().input_tags.allow_nan
        return tags

    def _base_estimator(self):
        return self.estimator if self.estimator is not None else LogisticRegression(max_iter=1000)

    @staticmethod
    def _weight_key(est) -> str | None:
        """The fit keyword that carries sample weights to ``est``, or None if it has none."""
        if isinstance(est, Pipeline):
            name, last = est.steps[-1]
            if last is not None and last != "passthrough" and has_fit_parameter(last, "sample_weight"):
                return f"{name}__sample_weight"
            return None
        return "sample_weight" if has_fit_parameter(est, "sample_weight") else None

    def fit(self, X, y, meta_X=None, meta_y=None):
        """Fit the weighter, then a clone of ``estimator`` with the learned ``sample_weight``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        meta_X, meta_y : array-like, optional
            A balanced meta set, passed to :meth:`OTSampleWeighter.fit`.

        Returns
        -------
        self : OTReweightedClassifier
        """
        base = self._base_estimator()
        key = self._weight_key(base)
        if key is None:
            raise OTReweightError(
                f"{type(base).__name__} does not accept sample_weight in fit; use an estimator that does "
                "(e.g. LogisticRegression, SVC, RandomForestClassifier, HistGradientBoostingClassifier, SGDClassifier)"
            )
        if self.weighter is not None and not isinstance(self.weighter, OTSampleWeighter):
            raise OTReweightError(f"weighter must be an OTSampleWeighter or None, got {self.weighter!r}")
        weighter = clone(self.weighter) if self.weighter is not None else OTSampleWeighter()
        finite = "allow-nan" if weighter.transformer is not None else True
        # Validate here (n_features_in_, feature names, finiteness); X itself is passed on as
        # given, so that the weighter's transformer and the estimator see e.g. a DataFrame.
        X_checked, y = validate_data(self, X, y, dtype=None if weighter.transformer is not None else "numeric",
                                     ensure_all_finite=finite, ensure_min_samples=2)
        if not hasattr(X, "columns"):
            X = X_checked
        check_classification_targets(y)
        rng = check_random_state(self.random_state)
        if self.random_state is not None:
            weighter.set_params(random_state=rng.randint(np.iinfo(np.int32).max))
        self.weighter_ = weighter.fit(X, y, meta_X=meta_X, meta_y=meta_y)
        self.sample_weight_ = self.weighter_.sample_weight(self.meta_weight)

        est = clone(base)
        if self.random_state is not None:
            seeds = {
                k: rng.randint(np.iinfo(np.int32).max)
                for k, v in est.get_params(deep=True).items()
                if (k == "random_state" or k.endswith("__random_state")) and v is None
            }
            if seeds:
                est.set_params(**seeds)
        self.estimator_ = est.fit(X, y, **{key: self.sample_weight_})
        return self

    @property
    def classes_(self):
        """Class labels, from the fitted estimator."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.classes_

    def _check_X(self, X):
        """Validate ``X`` against ``fit``; return it as the estimator should see it."""
        check_is_fitted(self, "estimator_")
        finite = "allow-nan" if self.weighter_.transformer is not None else True
        checked = validate_data(self, X, reset=False, dtype=None if self.weighter_.transformer is not None else "numeric",
                                ensure_all_finite=finite)
        return X if hasattr(X, "columns") else checked

    def predict(self, X):
        """Class labels predicted by the fitted estimator."""
        X = self._check_X(X)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the fitted estimator."""
        X = self._check_X(X)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities from the fitted estimator."""
        X = self._check_X(X)
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the fitted estimator."""
        X = self._check_X(X)
        return self.estimator_.decision_function(X)
