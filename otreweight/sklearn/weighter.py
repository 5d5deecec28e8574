"""The sample weighter :class:`OTSampleWeighter` (scikit-learn estimator); its numerical parts are
in :mod:`otreweight.sklearn.objectives`."""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _get_feature_names, check_array, check_is_fitted, validate_data

from .._errors import OTReweightError, check_choice, check_positive, is_number
from ..cost import COSTS, LABEL_SCALES
from ..transport import balanced_target_mass, check_cost_size
from .objectives import (
    as_features,
    class_conditional,
    descent,
    draw_meta,
    kl_regularized,
    ot_cost,
    targets_of,
)

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
    more strongly. The label cost plays no part (mass never crosses classes). The solve is
    :func:`otreweight.transport.class_conditional_blocks`, the one
    ``OTReweighter(objective="class_conditional")`` runs: the cost is formed only for groups of
    classes (their rows against their targets), never as the full :math:`n \times m` matrix.

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
        last is the value of the returned weights). Solved objectives: ``[objective value]`` at the
        returned weights (total mass 1; for ``"class_conditional"`` the value ``OTReweighter`` reports).
    converged_ : bool
        Whether the fit converged (else a ``ConvergenceWarning`` was issued).
    n_iter_ : int
        ``"descent"``: passes run (undone ones included); solved objectives: POT's iterations
        (the most over the class blocks for ``"class_conditional"``; 0 when every class has one target,
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
        if not is_number(self.tol, low=0):
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
    def _align_columns(self, meta_X):
        """``meta_X`` with its columns in the order of ``X``'s when both are named (scikit-learn's
        ``feature_names_in_``); one line naming the columns when the names differ."""
        names = getattr(self, "feature_names_in_", None)
        meta_names = _get_feature_names(meta_X)
        if names is None or meta_names is None or np.array_equal(meta_names, names):
            return meta_X
        extra, lacking = sorted(set(meta_names) - set(names)), sorted(set(names) - set(meta_names))
        if extra or lacking or len(meta_names) != len(names):
            raise OTReweightError(
                f"meta_X's columns differ from X's: {extra[:10]} not in X, {lacking[:10]} missing from meta_X; "
                "give meta_X the columns of X")
        return meta_X[list(names)]  # same names, another order: aligned by name

    def _given_meta(self, X, meta_X, meta_y, user: bool, finite):
        """``meta_X`` as the transformer should see it and ``meta_y`` encoded, after the checks."""
        meta_X = self._align_columns(meta_X)
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
        return meta_X_raw, np.searchsorted(self.classes_, meta_y_arr)

    def _solve(self, Z, weighted_idx, y_w, t_feats, t_labels, n_classes, rng):
        """The objective's masses on the rows ``weighted_idx`` of ``Z`` (:mod:`.objectives`)."""
        solve = dict(eps=self.eps, lam=float(self.lam), tol=self.sinkhorn_tol, max_iter=self.sinkhorn_max_iter)
        costs = dict(cost=self.cost, alpha=self.alpha, label_scale=self.label_scale)
        if self.objective == "class_conditional":
            return class_conditional(Z, weighted_idx, y_w, t_feats, t_labels, n_classes, **costs, **solve)
        check_cost_size(len(weighted_idx), len(t_labels), f"objective={self.objective!r} on {len(weighted_idx):,} "
                        f"examples against {len(t_labels):,} targets",
                        "use objective='class_conditional' (solved class by class) or targets='prototype'")
        cost = torch.from_numpy(ot_cost(Z, y_w, t_feats, t_labels, n_classes, **costs, keep=weighted_idx))
        if self.objective == "kl_regularized":
            return kl_regularized(cost, y_w, t_labels, n_classes, self.init or "balanced", **solve)
        counts = np.bincount(y_w, minlength=n_classes).astype(np.float64)
        start = -np.log(counts[y_w]) if (self.init or "uniform") == "balanced" else np.zeros(y_w.shape[0])
        n_batches = 1 if self.batch_size is None else max(1, math.ceil(y_w.shape[0] / self.batch_size))
        b = balanced_target_mass(torch.from_numpy(t_labels.astype(np.int64)), n_classes)
        return descent(cost, torch.from_numpy(start), b, n_batches, rng, eps=self.eps, learning_rate=self.learning_rate,
                       max_iter=self.max_iter, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
                       sinkhorn_tol=self.sinkhorn_tol, sinkhorn_max_iter=self.sinkhorn_max_iter, verbose=self.verbose)

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
            targets carry the same total mass, however many meta examples it has. When ``X`` and
            ``meta_X`` both have column names (DataFrames), ``meta_X``'s columns are taken in the
            order of ``X``'s; other names are refused.
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
            meta_idx, weighted_idx = draw_meta(y_enc, n_classes, self.n_meta_per_class, self.exclude_meta, rng)
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
            meta_X_raw, meta_y_enc = self._given_meta(X, meta_X, meta_y, user, finite)
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
        Z = as_features(self.transformer_.transform(raw_X))
        meta_Z = as_features(self.transformer_.transform(meta_X_raw))
        y_w = y_enc[weighted_idx]
        t_feats, t_labels = targets_of(self.targets, Z, meta_Z, meta_y_enc, weighted_idx, y_w, missing, n_classes)

        res = self._solve(Z, weighted_idx, y_w, t_feats, t_labels, n_classes, rng)
        self.ot_values_, self.n_iter_, self.converged_ = res.ot_values, res.n_iter, res.converged
        self.n_backtracks_ = res.n_backtracks

        self.weights_ = np.zeros(n, dtype=np.float64)
        self.weights_[weighted_idx] = res.mass
        self.meta_mask_ = np.zeros(n, dtype=bool)
        if self.meta_drawn_:
            self.meta_mask_[np.setdiff1d(np.arange(n), weighted_idx)] = True
        self.class_mass_ = np.bincount(y_enc, weights=self.weights_, minlength=n_classes)
        self._y_enc = y_enc
        if not np.isfinite(self.weights_).all():
            raise OTReweightError("the learned weights are not finite; lower learning_rate or raise eps")
        return self

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
