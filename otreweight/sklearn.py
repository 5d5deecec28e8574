r"""OT re-weighting for scikit-learn users: a sample weighter and a meta-estimator.

:class:`OTSampleWeighter` learns one mass :math:`a_i` per training example by optimal transport
between the weighted training set and balanced meta targets. With :math:`z = T(x)` the features
after a transformer :math:`T` (a :class:`~sklearn.preprocessing.StandardScaler` for dense input,
the rows as given for sparse input such as TF-IDF), the cost between an example and a target is
:math:`C_{ij} = \alpha\,(1-\cos(z_i, z'_j)) + (1-\alpha)\,d\,[y_i \ne y'_j]` (see
:mod:`otreweight.cost`) and the targets are the per-class means of the meta features
(``"prototype"``) or every meta example (``"whole"``, see :mod:`otreweight.targets`). Three
objectives (``objective``):

* ``"class_conditional"`` (default): every class receives exactly :math:`1/K` of the mass (balanced
  by construction, whatever the class counts and the meta counts) and inside each class
  :math:`a_c = \arg\min \mathrm{OT}_\varepsilon(a_c, b_c) + \lambda\,\mathrm{KL}(a_c\,\|\,u_c)`
  against that class's targets (:func:`otreweight.transport.class_conditional_ot`): examples far
  from their class's meta examples lose weight. ``lam = inf`` is exactly ``class_weight="balanced"``.
* ``"kl_regularized"``: :math:`a = \arg\min \mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\,\|\,p)`
  over all examples and targets, :math:`p` the class-balanced prior (``init``); the label cost may
  move mass between classes (:func:`otreweight.transport.semi_relaxed_ot`).
* ``"descent"``: gradient steps on :math:`\min_{a=\mathrm{softmax}(s)} \mathrm{OT}_\varepsilon(a, b)`
  (the objective of the paper), stopped by ``max_iter`` / ``n_iter_no_change``. Its minimiser is
  explicit and degenerate for long tails: a target of a rare class spreads its mass over a head
  class's examples as soon as that class outnumbers the rare one by more than about
  :math:`e^{\Delta C/\varepsilon}`, so run long it drains the rare classes.

The two solved objectives are solved to convergence by POT's unbalanced Sinkhorn (no early stop);
any fit that a stopping rule or ``max_iter`` ends before convergence issues a
:class:`~sklearn.exceptions.ConvergenceWarning`.

:class:`OTReweightedClassifier` fits the weighter, then a clone of any scikit-learn classifier
whose ``fit`` accepts ``sample_weight``, with the learned weights.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.extmath import row_norms, safe_sparse_dot
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, has_fit_parameter, validate_data

from ._errors import OTReweightError, check_choice, check_positive
from .cost import COSTS, LABEL_SCALES, _label_distance
from .metrics import (
    classification_report_imbalanced,
    geometric_mean_score,
    imbalanced_scores,
    per_class_table,
)
from .transport import (
    OTConvergenceWarning,
    balanced_target_mass,
    entropic_ot,
    semi_relaxed_objective,
    semi_relaxed_ot,
)

__all__ = [
    "MetaSetWarning",
    "OTReweightedClassifier",
    "OTSampleWeighter",
    "classification_report_imbalanced",
    "geometric_mean_score",
    "imbalanced_scores",
    "per_class_table",
]

SKLEARN_OBJECTIVES = ("class_conditional", "kl_regularized", "descent")
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


def _as_features(Z, what: str = "the transformer's output"):
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


def _cosine(A, B) -> np.ndarray:
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


def _class_means(Z, labels: np.ndarray, classes: np.ndarray):
    """Mean row of ``Z`` for each class of ``classes`` (sparse in, sparse out), in that order."""
    pos = {c: k for k, c in enumerate(classes)}
    rows = np.array([pos[c] for c in labels.tolist()], dtype=np.int64)
    counts = np.bincount(rows, minlength=len(classes)).astype(np.float64)
    avg = sp.csr_matrix((1.0 / counts[rows], (rows, np.arange(labels.shape[0]))), shape=(len(classes), labels.shape[0]))
    out = avg @ Z
    return out.tocsr() if sp.issparse(out) else np.asarray(out)


def _stack(parts):
    if any(sp.issparse(p) for p in parts):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.vstack(parts)


class OTSampleWeighter(BaseEstimator):
    r"""Per-example weights learned by entropic optimal transport to a balanced meta set.

    ``fit`` returns one mass per weighted training example, summing to 1 (see the module
    docstring for the cost and the targets). What the masses are depends on ``objective``:

    **"class_conditional" (default).** Class :math:`c` gets exactly :math:`1/K` of the mass, so
    :meth:`sample_weight` gives each class the same total weight as ``class_weight="balanced"``,
    by construction (on a 4,000:1 imbalance too). Inside the class the mass is the solution of
    :math:`\min_{a_c} \mathrm{OT}_\varepsilon(a_c, b_c) + \lambda\,\mathrm{KL}(a_c\,\|\,\text{uniform})`
    against the class's own targets, solved to convergence by POT: with prototype targets,
    :math:`a_i \propto e^{-C_i/(\lambda+\varepsilon)}` within the class (with the defaults,
    :math:`C_i = 0.5\,(1-\cos)` and :math:`\lambda+\varepsilon = 1.1`, the heaviest example of a
    class weighs at most :math:`e^{1/1.1} \approx 2.5` times the lightest); ``lam=inf`` is exactly
    ``class_weight="balanced"``, smaller ``lam`` favours the examples near the class's meta set
    more strongly. The label cost plays no part (mass never crosses classes).

    **"kl_regularized".** :math:`\min_a \mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\,\|\,p)`
    over all examples, :math:`p` the prior of ``init`` (class-balanced by default) and :math:`b`
    giving every class's targets the same total mass; the label cost moves mass between classes,
    the KL term keeps it near :math:`p`. Solved to convergence by POT.

    **"descent"** (the objective of the paper, the weighter's behaviour before the solved
    objectives): gradient steps on the scores :math:`s` of :math:`a = \mathrm{softmax}(s)` to
    reduce :math:`\mathrm{OT}_\varepsilon(a, b)`, the gradient being POT's envelope gradient. The
    minimiser is explicit, :math:`a^*_i = \sum_j b_j\,\mathrm{softmax}_i(-C_{\cdot j}/\varepsilon)`,
    and so is the minimum value; the fit **converges** when the OT value is within ``tol`` times
    its starting gap of that minimum. It stops at ``max_iter`` passes, or after
    ``n_iter_no_change`` accepted passes in a row that each lower the best value by less than
    ``tol`` times the decrease so far; both end the fit before convergence and issue a
    :class:`~sklearn.exceptions.ConvergenceWarning`. On the full batch a step that raised the OT
    value is undone and the learning rate halved; such a pass does **not** count as a pass without
    progress (it counts towards ``max_iter``). ``learning_rate`` is batch-size free: the step on
    the scores of a batch of :math:`b` examples is ``learning_rate * b`` times the gradient.
    Run to convergence this objective drains the rare classes when the imbalance is large
    compared with :math:`e^{\Delta C/\varepsilon}`; early stopped it stays near its start.

    **Sparse input** (``scipy.sparse``, e.g. TF-IDF) is never densified: the cosine is computed as
    :math:`X Z'^\top / (\|x_i\|\,\|z'_j\|)` from the sparse rows (:math:`n \times m` dense result
    only, :math:`m` the number of targets), the prototypes are sparse class means, and the default
    transformer for sparse input is the identity (``"passthrough"``): the cosine of TF-IDF rows.

    Parameters
    ----------
    objective : {"class_conditional", "kl_regularized", "descent"}, default="class_conditional"
        The weight problem (see above).
    targets : {"prototype", "whole"}, default="prototype"
        Meta targets: one per class (the mean of that class's meta features) or every meta example.
        A class with no meta example (only possible with a given ``meta_X``) takes its targets from
        its own training examples (their mean, or all of them), with a :class:`MetaSetWarning`.
    n_meta_per_class : int, default=10
        Size per class of the meta set drawn from the training data when ``fit`` gets no
        ``meta_X``. With ``exclude_meta=True`` at most half of each class is drawn (rounded
        down; a class with one example shares it between the meta set and the weighted examples).
    exclude_meta : bool, default=True
        Whether a drawn meta set is left out of the weighted examples (its rows get weight 0 in
        :attr:`weights_`; see :meth:`sample_weight` for what they receive as ``sample_weight``).
    transformer : transformer, "passthrough" or None, default=None
        Maps ``X`` to the features the cost is computed on; cloned and fitted on the training
        ``X``. ``None`` means :class:`~sklearn.preprocessing.StandardScaler` for dense ``X`` and
        ``"passthrough"`` (the rows as given) for sparse ``X``. With a transformer, ``X`` may
        contain NaN if the transformer removes them (e.g. a pipeline with an imputer).
    eps : float, default=0.1
        Entropic regularisation :math:`\varepsilon`.
    lam : float, default=1.0
        :math:`\lambda`, weight of the KL term of the solved objectives (``inf``: the prior itself).
    cost : {"combined", "feature", "label"}, default="combined"
        The cost between examples and targets (:mod:`otreweight.cost`).
    alpha : float, default=0.5
        Weight of the feature cost in ``"combined"``.
    label_scale : {"unit", "reference"}, default="unit"
        Label cost between different classes: 1 (``"unit"``) or :math:`2/K` (``"reference"``, the
        authors' CIFAR code); no effect with ``"class_conditional"``.
    init : {"uniform", "balanced"} or None, default=None
        Starting weights of ``"descent"`` and prior of ``"kl_regularized"``: equal for every
        example, or equal mass per class (:math:`1/(K n_c)` per example of class :math:`c`).
        ``None``: ``"uniform"`` for ``"descent"``, ``"balanced"`` for ``"kl_regularized"``.
        ``"class_conditional"`` uses neither (its prior is uniform within each class).
    learning_rate : float, default=1.0
        ``"descent"``: step size on the scores, in batch-size-free units.
    batch_size : int or None, default=None
        ``"descent"``: ``None`` optimises on all weighted examples at once (full batch); an integer
        splits every pass into shuffled mini-batches of about that size (the paper's scheme). The
        solved objectives always solve on all examples at once.
    max_iter : int, default=100
        ``"descent"``: maximum number of passes.
    tol : float, default=1e-3
        ``"descent"``: convergence (OT value within ``tol`` times the starting gap of its minimum)
        and progress (see above) tolerance.
    n_iter_no_change : int, default=3
        ``"descent"``: accepted passes in a row without progress that stop the optimisation.
    sinkhorn_tol : float, default=1e-6
        Tolerance of POT's solvers (Sinkhorn for ``"descent"``; the unbalanced Sinkhorn of the
        solved objectives, on the relative change of its scalings).
    sinkhorn_max_iter : int, default=1000
        Iteration cap of POT's solvers (reaching it issues a ``ConvergenceWarning``).
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of the meta set and the order of the mini-batches.
    verbose : bool, default=False
        ``"descent"``: show a ``tqdm`` progress bar over the passes.

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
    own_target_classes_ : ndarray
        Classes whose targets came from their own training examples (no meta example).
    class_mass_ : ndarray of shape (n_classes,)
        Total learned mass of each class (sums to 1; exactly :math:`1/K` each for
        ``"class_conditional"``, to the solver's precision).
    ot_values_ : list of float
        ``"descent"``: the OT value of each accepted pass (non-increasing on the full batch; the
        last is the value of the returned weights). Solved objectives: ``[objective value]``.
    converged_ : bool
        Whether the fit converged (else a ``ConvergenceWarning`` was issued).
    n_iter_ : int
        ``"descent"``: passes run (undone ones included); solved objectives: POT's iterations
        (the most over the classes for ``"class_conditional"``; 0 when every class has one target,
        whose solution is explicit).
    n_backtracks_ : int
        ``"descent"``: full-batch steps undone because they raised the OT value (0 otherwise).
    transformer_ : transformer
        The fitted feature transformer.
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
        objective="class_conditional",
        targets="prototype",
        n_meta_per_class=10,
        exclude_meta=True,
        transformer=None,
        eps=0.1,
        lam=1.0,
        cost="combined",
        alpha=0.5,
        label_scale="unit",
        init=None,
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
        self.objective = objective
        self.targets = targets
        self.n_meta_per_class = n_meta_per_class
        self.exclude_meta = exclude_meta
        self.transformer = transformer
        self.eps = eps
        self.lam = lam
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
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = self._user_transformer()
        return tags

    def _user_transformer(self) -> bool:
        return self.transformer is not None and not (isinstance(self.transformer, str) and self.transformer == "passthrough")

    def _check_params(self) -> None:
        check_choice("objective", self.objective, SKLEARN_OBJECTIVES)
        check_choice("targets", self.targets, SKLEARN_TARGETS)
        if self.init is not None:
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
        if isinstance(self.lam, bool) or not isinstance(self.lam, numbers.Real) or not self.lam > 0:
            raise OTReweightError(f"lam must be a number > 0 or inf, got {self.lam!r}")
        if not isinstance(self.tol, numbers.Real) or not math.isfinite(self.tol) or self.tol < 0:
            raise OTReweightError(f"tol must be a finite number >= 0, got {self.tol!r}")
        if not isinstance(self.alpha, numbers.Real) or not 0.0 <= self.alpha <= 1.0:
            raise OTReweightError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        if isinstance(self.transformer, str):
            if self.transformer != "passthrough":
                raise OTReweightError(
                    f"transformer must be a scikit-learn transformer, 'passthrough' or None, got {self.transformer!r}"
                )
        elif self.transformer is not None and not (
            hasattr(self.transformer, "fit") and hasattr(self.transformer, "transform")
        ):
            raise OTReweightError(
                f"transformer must be a scikit-learn transformer with fit and transform, got {self.transformer!r}"
            )

    def _make_transformer(self, sparse_input: bool):
        if self._user_transformer():
            return clone(self.transformer)
        if self.transformer == "passthrough" or sparse_input:
            return FunctionTransformer(accept_sparse=True)
        return StandardScaler()

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y, meta_X=None, meta_y=None):
        """Learn one weight per training example.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Training class labels (at least two classes).
        meta_X : {array-like, sparse matrix} of shape (n_meta, n_features), optional
            A meta set, ideally balanced. If omitted (with ``meta_y``), one is drawn from
            ``(X, y)``: up to ``n_meta_per_class`` rows per class, seeded by ``random_state``, with
            a :class:`MetaSetWarning`. A class of ``y`` without meta example takes its targets
            from its own training examples (also with a :class:`MetaSetWarning`). Every class's
            targets carry the same total mass, however many meta examples it has.
        meta_y : array-like of shape (n_meta,), optional
            Labels of ``meta_X``.

        Returns
        -------
        self : OTSampleWeighter
        """
        self._check_params()
        user = self._user_transformer()
        finite = "allow-nan" if user else True
        raw_X = X
        X, y = validate_data(self, X, y, dtype=None if user else "numeric", accept_sparse="csr",
                             ensure_all_finite=finite, ensure_min_samples=2)
        # A user transformer sees X as given (e.g. a DataFrame for a ColumnTransformer).
        if not user or not hasattr(raw_X, "columns"):
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
            meta_X_arr = check_array(meta_X, dtype=None if user else "numeric", accept_sparse="csr",
                                     ensure_all_finite=finite, input_name="meta_X")
            meta_X_raw = meta_X if user and hasattr(meta_X, "columns") else meta_X_arr
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
            weighted_idx = np.arange(n)
            self.meta_drawn_, self.meta_indices_ = False, None
        missing = np.setdiff1d(np.arange(n_classes), meta_y_enc)
        self.own_target_classes_ = self.classes_[missing]
        if missing.size:
            warnings.warn(
                f"the meta set has no example of class(es) {self.classes_[missing][:10].tolist()}: their targets "
                "are their own training examples (they still receive the same total mass as every other class)",
                MetaSetWarning, stacklevel=2,
            )

        self.transformer_ = self._make_transformer(sp.issparse(X))
        self.transformer_.fit(raw_X, y)
        Z = _as_features(self.transformer_.transform(raw_X))
        meta_Z = _as_features(self.transformer_.transform(meta_X_raw))
        y_w = y_enc[weighted_idx]
        # Targets: the meta features (or their class means); a class without meta example
        # contributes its own weighted training rows instead.
        t_feats, t_labels = [meta_Z], [np.asarray(meta_y_enc, dtype=np.int64)]
        for c in missing:
            rows = weighted_idx[y_w == c]
            t_feats.append(Z[rows])
            t_labels.append(np.full(rows.shape[0], c, dtype=np.int64))
        t_feats, t_labels = _stack(t_feats), np.concatenate(t_labels)
        if self.targets == "prototype":
            t_feats, t_labels = _class_means(t_feats, t_labels, np.arange(n_classes)), np.arange(n_classes)
        tl = torch.from_numpy(t_labels.astype(np.int64))

        self.n_backtracks_ = 0
        solve = dict(eps=self.eps, lam=float(self.lam), tol=self.sinkhorn_tol, max_iter=self.sinkhorn_max_iter)
        if self.objective == "class_conditional":
            mass = self._class_conditional(Z, weighted_idx, y_w, t_feats, t_labels, n_classes, solve)
        else:
            from .transport import check_cost_size

            check_cost_size(len(weighted_idx), len(t_labels), f"objective={self.objective!r} on {len(weighted_idx):,} "
                            f"examples against {len(t_labels):,} targets",
                            "use objective='class_conditional' (solved class by class) or targets='prototype'")
            cost = self._cost_matrix(Z, weighted_idx, y_w, t_feats, t_labels, n_classes)
        if self.objective == "descent":
            init = self.init or "uniform"
            counts = np.bincount(y_w, minlength=n_classes).astype(np.float64)
            start = -np.log(counts[y_w]) if init == "balanced" else np.zeros(y_w.shape[0])
            n_batches = 1 if self.batch_size is None else max(1, math.ceil(y_w.shape[0] / self.batch_size))
            b = balanced_target_mass(tl, n_classes)
            mass = self._descent(cost, torch.from_numpy(start), b, n_batches, rng)
        elif self.objective == "kl_regularized":
            counts = np.bincount(y_w, minlength=n_classes).astype(np.float64)
            if (self.init or "balanced") == "balanced":
                prior = 1.0 / (np.count_nonzero(counts) * counts[y_w])
            else:
                prior = np.full(y_w.shape[0], 1.0 / y_w.shape[0])
            res = semi_relaxed_ot(cost, torch.from_numpy(prior), balanced_target_mass(tl, n_classes), **solve)
            mass = res.weights.numpy()
            mass = mass / mass.sum()
            self.ot_values_ = [float(res.value)]
            self.n_iter_, self.converged_ = res.n_iter, res.converged

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

    def _class_conditional(self, Z, weighted_idx, y_w, t_feats, t_labels, n_classes, solve) -> np.ndarray:
        r"""``"class_conditional"``, one POT solve per class on that class's block of the cost only.

        Inside a class the label cost is 0, so the block is :math:`\alpha(1-\cos)` between the
        class's rows and its targets (one target, a prototype: the explicit minimiser
        :math:`a_i \propto e^{-C_i/(\lambda+\varepsilon)}`; several: POT's unbalanced Sinkhorn); class :math:`c` gets prior :math:`1/(K n_c)` per example
        and target masses :math:`1/(K m_c)`, hence total mass exactly :math:`1/K`. This is the
        problem :func:`~otreweight.transport.class_conditional_ot` solves in one masked solve,
        without ever forming the :math:`n \times m` matrix (memory :math:`\max_c n_c m_c`).
        """
        mass = np.empty(y_w.shape[0], dtype=np.float64)
        self.ot_values_, self.n_iter_, stalled = [0.0], 0, []
        for c in range(n_classes):
            pos = np.flatnonzero(y_w == c)
            tj = np.flatnonzero(t_labels == c)
            if self.cost == "label":
                block = np.zeros((pos.size, tj.size))
            else:
                block = 1.0 - _cosine(Z[weighted_idx[pos]], t_feats[tj])
                if self.cost == "combined":
                    block *= float(self.alpha)
            # Solved at unit mass (the minimiser scales with the mass), then given 1/K.
            prior = torch.full((pos.size,), 1.0 / pos.size, dtype=torch.float64)
            b = torch.full((tj.size,), 1.0 / tj.size, dtype=torch.float64)
            if tj.size == 1:
                # One target (a prototype): the minimiser is explicit, a_i = softmax(-C_i / (lam + eps)).
                lam = solve["lam"]
                w = torch.softmax(-torch.from_numpy(block[:, 0]) / (lam + self.eps), 0) if math.isfinite(lam) else prior
                value = semi_relaxed_objective(torch.from_numpy(block), w[:, None], prior, self.eps, lam)
                mass[pos] = w.numpy() / n_classes
                self.ot_values_[0] += float(value) / n_classes
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OTConvergenceWarning)  # one warning for all classes, below
                res = semi_relaxed_ot(torch.from_numpy(block), prior, b, **solve)
            mass[pos] = res.weights.numpy() / (res.weights.sum().item() * n_classes)
            self.ot_values_[0] += float(res.value) / n_classes
            self.n_iter_ = max(self.n_iter_, res.n_iter)
            if not res.converged:
                stalled.append(self.classes_[c])
        self.converged_ = not stalled
        if stalled:
            warnings.warn(ConvergenceWarning(
                f"the class_conditional solve of {len(stalled)} class(es) (e.g. {stalled[0]!r}) stopped at "
                f"sinkhorn_max_iter={self.sinkhorn_max_iter} before reaching sinkhorn_tol={self.sinkhorn_tol:g}; "
                "raise sinkhorn_max_iter"), stacklevel=3)
        return mass / mass.sum()

    def _cost_matrix(self, Z, weighted_idx, y_w, t_feats, t_labels, n_classes) -> torch.Tensor:
        r""":math:`C = \alpha(1-\cos) + (1-\alpha)\,d\,[y \ne y']` between the weighted rows and the targets.

        The cosine is computed for all rows of ``Z`` (sparse rows read in place, no copy) and the
        weighted rows are then taken from the dense ``(n, m)`` result.
        """
        diff = (y_w[:, None] != t_labels[None, :]).astype(np.float64)
        d = _label_distance(n_classes, self.label_scale)
        if self.cost == "label":
            return torch.from_numpy(diff * d)
        cos = _cosine(Z, t_feats)
        if weighted_idx.shape[0] != cos.shape[0]:
            cos = cos[weighted_idx]
        feat = 1.0 - cos
        if self.cost == "feature":
            return torch.from_numpy(feat)
        a = float(self.alpha)
        return torch.from_numpy(a * feat + (1.0 - a) * d * diff)

    def _value_and_grad(self, s: torch.Tensor, cost: torch.Tensor, b: torch.Tensor):
        """OT value of ``softmax(s)`` and its gradient with respect to ``s`` (POT's envelope gradient)."""
        s = s.detach().requires_grad_(True)
        res = entropic_ot(cost, torch.softmax(s, dim=0), b, eps=self.eps, tol=self.sinkhorn_tol,
                          max_iter=self.sinkhorn_max_iter)
        (grad,) = torch.autograd.grad(res.value, s)
        return float(res.value.detach()), grad

    def _minimum(self, cost: torch.Tensor, b: torch.Tensor) -> float:
        r""":math:`\min_a \mathrm{OT}_\varepsilon(a, b) = \sum_j b_j\,(\varepsilon\log b_j - \varepsilon
        \log\sum_i e^{-C_{ij}/\varepsilon})` (each target spreads its mass by a softmax)."""
        e = self.eps
        return float((b * (e * torch.log(b) - e * torch.logsumexp(-cost / e, dim=0))).sum())

    def _descent(self, cost: torch.Tensor, s: torch.Tensor, b: torch.Tensor, n_batches: int, rng) -> np.ndarray:
        """Gradient passes on the scores with the stopping rules of the class docstring; the masses."""
        n_w = cost.shape[0]
        lr = self.learning_rate * n_w / n_batches
        self.ot_values_, self.n_iter_ = [], 0
        reason = "max_iter"
        best, stale, gap0 = math.inf, 0, None
        passes = range(self.max_iter)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            passes = bar = tqdm(passes, desc="OT re-weighting", unit="pass")
        gap = math.nan
        if n_batches == 1:
            value, grad = self._value_and_grad(s, cost, b)
            opt = self._minimum(cost, b)
            gap0 = value - opt
            self.ot_values_.append(value)
        for _ in passes:
            if n_batches == 1:
                if value - opt <= self.tol * gap0:
                    reason = None
                    break
                self.n_iter_ += 1
                cand = s - lr * grad
                v_c, g_c = self._value_and_grad(cand, cost, b)
                if not v_c <= value:  # undo the step, halve the rate: not a pass without progress
                    lr *= 0.5
                    self.n_backtracks_ += 1
                    continue
                s, value, grad = cand, v_c, g_c
                gap = value - opt
            else:
                self.n_iter_ += 1
                value = gap = 0.0
                for batch in torch.tensor_split(torch.from_numpy(rng.permutation(n_w)), n_batches):
                    cb = cost[batch]
                    v, g = self._value_and_grad(s[batch], cb, b)
                    share = batch.shape[0] / n_w
                    value += v * share
                    gap += (v - self._minimum(cb, b)) * share
                    s[batch] = s[batch] - lr * g
                if gap0 is None:
                    gap0 = gap
            self.ot_values_.append(value)
            if bar is not None:
                bar.set_postfix(ot=f"{value:.5f}")
            if gap <= self.tol * gap0 and n_batches > 1:
                reason = None
                break
            total = self.ot_values_[0] - min(best, value)
            if value < best - self.tol * total or not math.isfinite(best):
                best, stale = value, 0
            else:
                stale += 1
                if stale >= self.n_iter_no_change:
                    reason = "n_iter_no_change"
                    break
        else:
            if n_batches == 1 and value - opt <= self.tol * gap0:
                reason = None
        if bar is not None:
            bar.close()
        self.converged_ = reason is None
        if reason is not None:
            gap = (value - opt) if n_batches == 1 else gap
            rel = gap / gap0 if gap0 else 0.0
            warnings.warn(ConvergenceWarning(
                f"objective='descent' stopped by {reason} after {self.n_iter_} passes before convergence: the OT value "
                f"is {rel:.3g} of its starting gap above its minimum (tol={self.tol:g}); raise max_iter / "
                "n_iter_no_change or use a solved objective ('class_conditional', 'kl_regularized')"), stacklevel=3)
        return torch.softmax(s.to(torch.float64), dim=0).numpy()

    def sample_weight(self, meta_weight="class_mean"):
        """The learned weights scaled for ``sample_weight``, each class keeping its learned share.

        Parameters
        ----------
        meta_weight : "class_mean" or float, default="class_mean"
            What the rows of a drawn, excluded meta set receive. ``"class_mean"``: class
            :math:`c` (all its :math:`n_c` rows, meta rows included) gets the total
            ``class_mass_[c] * n_samples``; its meta rows get the class's mean
            ``class_mass_[c] * n_samples / n_c`` and its weighted rows share the rest in
            proportion to ``weights_``. The result has mean 1 over all rows, and for
            ``"class_conditional"`` every class has the total ``n_samples / K`` of
            ``class_weight="balanced"`` (with ``lam=inf`` it *is* ``class_weight="balanced"``).
            A number: the meta rows get that value (``0`` drops them) and the weighted rows
            ``weights_ * n_weighted`` (mean 1 over them).

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        weighted = ~self.meta_mask_
        if not isinstance(meta_weight, str):
            v = float(meta_weight)
            if not math.isfinite(v) or v < 0:
                raise OTReweightError(f"meta_weight must be 'class_mean' or a finite number >= 0, got {meta_weight!r}")
            w = self.weights_ * weighted.sum()
            w[self.meta_mask_] = v
            return w
        check_choice("meta_weight", meta_weight, ("class_mean",))
        if not self.meta_mask_.any():
            return self.weights_ * weighted.size
        # Class c's total: its learned share of n_samples. Meta rows: the class mean; the
        # weighted rows carry the rest, n_c^w / n_c of the total, in proportion to weights_.
        k, y = len(self.classes_), self._y_enc
        total = self.class_mass_ * y.shape[0]
        n_all = np.bincount(y, minlength=k).astype(np.float64)
        n_w = np.bincount(y[weighted], minlength=k).astype(np.float64)
        scale = np.divide(total * n_w / n_all, self.class_mass_, out=np.zeros(k), where=self.class_mass_ > 0)
        w = self.weights_ * scale[y]
        w[self.meta_mask_] = (total / n_all)[y[self.meta_mask_]]
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
    all rows, each class with its learned share: ``n_samples / K`` for the default objective). ``predict``, ``predict_proba``, ``predict_log_proba`` and
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
        tags.input_tags.sparse = True
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
        user = weighter._user_transformer()
        finite = "allow-nan" if user else True
        # Validate here (n_features_in_, feature names, finiteness); X itself is passed on as
        # given, so that the weighter's transformer and the estimator see e.g. a DataFrame.
        X_checked, y = validate_data(self, X, y, dtype=None if user else "numeric", accept_sparse=("csr", "csc", "coo"),
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
        user = self.weighter_._user_transformer()
        finite = "allow-nan" if user else True
        checked = validate_data(self, X, reset=False, dtype=None if user else "numeric",
                                accept_sparse=("csr", "csc", "coo"), ensure_all_finite=finite)
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
