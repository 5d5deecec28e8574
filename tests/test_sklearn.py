"""Tests of otreweight.sklearn: scikit-learn's estimator checks, the weights, and the meta-estimator.

Estimator checks skipped
------------------------
We mark no check as an expected failure (``expected_failed_checks`` is empty). scikit-learn
itself skips, in this environment:

* ``check_array_api_input``: it only runs with the environment variable ``SCIPY_ARRAY_API=1``;
* ``check_classifier_data_not_an_array`` (and the other pandas-based checks): pandas is not
  installed here; they run where it is.
"""
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from otreweight import OTReweightError, make_long_tailed
from otreweight.sklearn import MetaSetWarning, OTReweightedClassifier, OTSampleWeighter

pytestmark = pytest.mark.filterwarnings("ignore::otreweight.sklearn.MetaSetWarning")

# Small OT problems keep the estimator checks fast: a few passes are enough to exercise fit.
FAST = dict(max_iter=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run these small problems on one thread: on a busy 2-core machine, spinning torch/OpenMP
    thread pools made this file four times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def expected_failed_checks(estimator):
    """No estimator check is expected to fail (see the module docstring for scikit-learn's own skips)."""
    return {}


@parametrize_with_checks(
    [
        OTSampleWeighter(**FAST),
        OTReweightedClassifier(LogisticRegression(), weighter=OTSampleWeighter(**FAST)),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def long_tailed():
    """Digits 0-4 made long-tailed (IF 15): counts 90, 45, 23, 11, 6."""
    X, y = load_digits(n_class=5, return_X_y=True)
    split = make_long_tailed(y, 15, n_meta_per_class=0, n_val_per_class=0, n_max=90, seed=0)
    rest = np.setdiff1d(np.arange(y.shape[0]), split.train)
    return X[split.train], y[split.train], X[rest], y[rest]


def per_example_mass(w, y):
    classes, y_enc = np.unique(y, return_inverse=True)
    return np.bincount(y_enc, weights=w) / np.bincount(y_enc)


# -- the weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["class_conditional", "kl_regularized", "descent"])
def test_weights_positive_finite_normalised(long_tailed, objective):
    X, y, _, _ = long_tailed
    with pytest.warns(MetaSetWarning, match="drew a balanced meta set"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # descent is early-stopped by design
        wt = OTSampleWeighter(objective=objective, random_state=0).fit(X, y)
    w = wt.weights_
    keep = ~wt.meta_mask_
    assert w.shape == y.shape and np.isfinite(w).all()
    assert (w[keep] > 0).all() and np.all(w[wt.meta_mask_] == 0)
    assert w.sum() == pytest.approx(1.0)
    assert wt.meta_mask_.sum() == wt.meta_indices_.size  # every drawn row excluded
    sw = wt.sample_weight()
    assert sw.mean() == pytest.approx(1.0)
    # each class keeps its learned share of the total, meta rows included
    np.testing.assert_allclose(np.bincount(y, sw) / y.size, wt.class_mass_, rtol=1e-9)
    assert np.isfinite(sw).all() and (sw > 0).all()
    if objective == "descent":
        assert 1 <= wt.n_iter_ <= wt.max_iter
        # full batch with backtracking: the OT value never goes up
        assert np.all(np.diff(wt.ot_values_) <= 1e-12)
    else:
        assert 0 <= wt.n_iter_ < wt.sinkhorn_max_iter and wt.converged_


def test_rare_classes_receive_more_mass_per_example(long_tailed):
    X, y, _, _ = long_tailed
    counts = np.bincount(y)
    for kw in ({}, {"targets": "whole"}, {"objective": "kl_regularized"},
               {"objective": "descent", "batch_size": 32}, {"objective": "descent", "targets": "whole"}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            wt = OTSampleWeighter(random_state=0, **kw).fit(X, y)
        per_ex = per_example_mass(wt.sample_weight(), y)  # meta rows: their class mean
        # the rarest two classes get more mass per example than the two most frequent ones
        order = np.argsort(counts)
        assert per_ex[order[:2]].min() > per_ex[order[-2:]].max(), kw
        # and the class masses are closer to uniform than the class frequencies
        freq = counts / counts.sum()
        assert wt.class_mass_.max() / wt.class_mass_.min() < freq.max() / freq.min(), kw


def test_given_meta_set_weights_every_row(long_tailed):
    X, y, Xr, yr = long_tailed
    meta = np.concatenate([np.flatnonzero(yr == c)[:5] for c in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetaSetWarning)
        wt = OTSampleWeighter(random_state=0).fit(X, y, meta_X=Xr[meta], meta_y=yr[meta])
    assert not wt.meta_drawn_ and wt.meta_indices_ is None and not wt.meta_mask_.any()
    assert (wt.weights_ > 0).all() and wt.sample_weight().mean() == pytest.approx(1.0)


def test_exclude_meta_false_and_meta_weight(long_tailed):
    X, y, _, _ = long_tailed
    wt = OTSampleWeighter(random_state=0, exclude_meta=False, max_iter=5).fit(X, y)
    assert not wt.meta_mask_.any() and (wt.weights_ > 0).all()
    wt = OTSampleWeighter(random_state=0, max_iter=5).fit(X, y)
    m = wt.meta_mask_
    assert np.all(wt.sample_weight(meta_weight=0)[m] == 0)
    assert np.all(wt.sample_weight(meta_weight=2.5)[m] == 2.5)
    cm = wt.sample_weight()  # class_mean: a meta row gets its class's mean weight
    for c in np.unique(y):
        rows = (y == c) & ~m
        assert np.allclose(cm[(y == c) & m], cm[rows].mean())
    with pytest.raises(OTReweightError, match="meta_weight"):
        wt.sample_weight(meta_weight=-1)


def test_draw_keeps_rare_classes_weighted():
    """At most half of a class is drawn; a one-example class is shared."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    y = np.array([0] * 30 + [1] * 7 + [2] * 2 + [3])
    wt = OTSampleWeighter(random_state=0, n_meta_per_class=10, max_iter=2).fit(X, y)
    drawn = np.bincount(y[wt.meta_indices_], minlength=4)
    assert drawn.tolist() == [10, 3, 1, 1]
    weighted = np.bincount(y[~wt.meta_mask_], minlength=4)
    assert weighted.tolist() == [20, 4, 1, 1]


def test_deterministic_under_random_state(long_tailed):
    X, y, _, _ = long_tailed
    for kw in ({}, {"objective": "descent", "batch_size": 25}):
        a = OTSampleWeighter(random_state=3, max_iter=10, **kw).fit(X, y)
        b = OTSampleWeighter(random_state=3, max_iter=10, **kw).fit(X, y)
        assert np.array_equal(a.weights_, b.weights_) and a.ot_values_ == b.ot_values_
    c = OTSampleWeighter(random_state=4, max_iter=10).fit(X, y)
    assert not np.array_equal(a.meta_indices_, c.meta_indices_)
    clf = OTReweightedClassifier(RandomForestClassifier(n_estimators=10), weighter=OTSampleWeighter(max_iter=5),
                                 random_state=0)
    p1 = clone(clf).fit(X, y).predict_proba(X)
    p2 = clone(clf).fit(X, y).predict_proba(X)
    assert np.array_equal(p1, p2)


def test_transformer_and_progress_bar(long_tailed, capsys):
    X, y, _, _ = long_tailed
    wt = OTSampleWeighter(transformer=PCA(n_components=5, random_state=0), random_state=0, max_iter=3,
                          objective="descent", verbose=True).fit(X, y)
    assert wt.transformer_.n_components_ == 5 and wt.transformer is not wt.transformer_
    assert "OT re-weighting" in capsys.readouterr().err
    # a transformer that imputes lets X carry NaN
    Xn = X.copy()
    Xn[::7, 3] = np.nan
    imp = make_pipeline(SimpleImputer(), StandardScaler())
    wt = OTSampleWeighter(transformer=imp, random_state=0, max_iter=3).fit(Xn, y)
    assert np.isfinite(wt.weights_).all()


# -- the meta-estimator ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "est",
    [
        LogisticRegression(max_iter=500),
        SVC(),
        RandomForestClassifier(n_estimators=10, random_state=0),
        HistGradientBoostingClassifier(max_iter=10, random_state=0),
        SGDClassifier(loss="log_loss", random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_classifier_any_estimator(long_tailed, est):
    X, y, Xt, yt = long_tailed
    clf = OTReweightedClassifier(est, weighter=OTSampleWeighter(max_iter=5), random_state=0).fit(X, y)
    assert np.array_equal(clf.classes_, np.unique(y))
    pred = clf.predict(Xt)
    assert pred.shape == yt.shape and np.isin(pred, clf.classes_).all()
    assert clf.score(Xt, yt) > 0.5
    assert np.allclose(clf.sample_weight_.mean(), 1.0)
    for method in ("predict_proba", "decision_function"):
        assert hasattr(clf, method) == hasattr(clf.estimator_, method)
        if hasattr(clf, method):
            assert np.allclose(getattr(clf, method)(Xt), getattr(clf.estimator_, method)(Xt))


def test_classifier_string_labels_and_pipeline_estimator(long_tailed):
    X, y, Xt, yt = long_tailed
    names = np.array(["zero", "one", "two", "three", "four"])
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    clf = OTReweightedClassifier(est, weighter=OTSampleWeighter(max_iter=5), random_state=0).fit(X, names[y])
    assert set(clf.classes_) == set(names)
    assert np.isin(clf.predict(Xt), names).all()


def test_in_pipeline_and_grid_search(long_tailed):
    X, y, Xt, yt = long_tailed
    pipe = Pipeline([("scale", StandardScaler()),
                     ("clf", OTReweightedClassifier(LogisticRegression(max_iter=500),
                                                    weighter=OTSampleWeighter(max_iter=3), random_state=0))])
    pipe.fit(X, y)
    assert pipe.predict(Xt).shape == yt.shape
    grid = GridSearchCV(pipe, {"clf__estimator__C": [0.1, 1.0], "clf__weighter__eps": [0.1, 0.2]},
                        cv=2, scoring="balanced_accuracy")
    grid.fit(X, y)
    assert set(grid.best_params_) == {"clf__estimator__C", "clf__weighter__eps"}
    assert grid.best_estimator_.named_steps["clf"].weighter_.eps in (0.1, 0.2)
    assert grid.predict(Xt).shape == yt.shape


def test_params_clone_roundtrip():
    clf = OTReweightedClassifier(SVC(C=2.0), weighter=OTSampleWeighter(eps=0.2, targets="whole"))
    params = clf.get_params(deep=True)
    assert params["estimator__C"] == 2.0 and params["weighter__eps"] == 0.2
    clf2 = clone(clf).set_params(estimator__C=3.0, weighter__batch_size=16)
    assert clf2.estimator.C == 3.0 and clf2.weighter.batch_size == 16 and clf.estimator.C == 2.0
    w = OTSampleWeighter(targets="nonsense", eps=-1)  # stored untouched, validated in fit
    assert w.get_params()["targets"] == "nonsense"


# -- bad input ------------------------------------------------------------------------------
def one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_errors_bad_input(long_tailed):
    X, y, Xr, yr = long_tailed
    w = OTSampleWeighter(max_iter=2)
    with pytest.raises(ValueError, match="single class") as e:
        w.fit(X[y == 0], y[y == 0])
    one_line(e)
    with pytest.raises(OTReweightError, match="absent from y"):
        w.fit(X[y < 4], y[y < 4], meta_X=Xr[:30], meta_y=yr[:30])
    with pytest.raises(OTReweightError, match="both meta_X and meta_y"):
        w.fit(X, y, meta_X=Xr[:10])
    with pytest.raises(OTReweightError, match="features"):
        w.fit(X, y, meta_X=Xr[:30, :10], meta_y=yr[:30])
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        w.fit(Xn, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        w.fit(X, y[:-3])
    for bad, match in (({"targets": "prototype_image"}, "targets"), ({"eps": 0}, "eps"),
                       ({"max_iter": 1.5}, "max_iter"), ({"batch_size": 0}, "batch_size"),
                       ({"alpha": 2}, "alpha"), ({"transformer": "pca"}, "transformer"),
                       ({"objective": "ot"}, "objective"), ({"lam": 0}, "lam"), ({"init": "cb"}, "init")):
        with pytest.raises(OTReweightError, match=match) as e:
            OTSampleWeighter(**bad).fit(X, y)
        one_line(e)


def test_errors_estimator_without_sample_weight(long_tailed):
    X, y, _, _ = long_tailed
    for est in (KNeighborsClassifier(), make_pipeline(StandardScaler(), KNeighborsClassifier())):
        with pytest.raises(OTReweightError, match="does not accept sample_weight") as e:
            OTReweightedClassifier(est).fit(X, y)
        one_line(e)
    with pytest.raises(OTReweightError, match="weighter must be"):
        OTReweightedClassifier(weighter=LogisticRegression()).fit(X, y)
    clf = OTReweightedClassifier(LogisticRegression(), weighter=OTSampleWeighter(max_iter=2))
    with pytest.raises(ValueError, match="class"):
        clf.fit(X[y == 1], y[y == 1])
