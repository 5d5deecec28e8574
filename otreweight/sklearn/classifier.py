"""The meta-estimator :class:`OTReweightedClassifier`: an :class:`~otreweight.sklearn.OTSampleWeighter`,
then any classifier fitted with the learned ``sample_weight``."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, has_fit_parameter, validate_data

from .._errors import OTReweightError
from .weighter import OTSampleWeighter


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
