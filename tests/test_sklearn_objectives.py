"""The scikit-learn weighter's objectives: class balance by construction, convergence warnings,
sparse input, meta sets without some class or unbalanced across classes."""
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from otreweight.sklearn import MetaSetWarning, OTReweightedClassifier, OTSampleWeighter

pytestmark = pytest.mark.filterwarnings("ignore::otreweight.sklearn.MetaSetWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def blobs(counts, d=5, seed=0, spread=1.0, scale=3.0):
    rng = np.random.RandomState(seed)
    centres = rng.normal(scale=scale, size=(len(counts), d))
    X = np.concatenate([centres[c] + spread * rng.normal(size=(n, d)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return X, y


def class_totals(w, y):
    return np.bincount(np.unique(y, return_inverse=True)[1], weights=w)


# -- balance by construction --------------------------------------------------------------------
@pytest.mark.parametrize("targets", ["prototype", "whole"])
def test_default_balances_class_masses_at_4000_to_1(targets):
    """4,000 : 40 : 2 examples: every class ends with 1/K of the mass (1e-6), unlike the descent run long."""
    X, y = blobs([4000, 40, 2], seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # the default converges
        wt = OTSampleWeighter(targets=targets, random_state=0).fit(X, y)
    assert wt.objective == "class_conditional" and wt.converged_
    np.testing.assert_allclose(wt.class_mass_, 1 / 3, atol=1e-6)
    sw = wt.sample_weight(meta_weight=0)
    n_w = (~wt.meta_mask_).sum()
    np.testing.assert_allclose(class_totals(sw, y), n_w / 3, rtol=1e-6)
    # within a class the weights differ (the OT part) but stay within the documented e^(1/1.1) for prototypes
    big = wt.weights_[(y == 0) & ~wt.meta_mask_]
    assert big.max() / big.min() > 1.05
    if targets == "prototype":
        assert big.max() / big.min() <= np.exp(1 / 1.1) * (1 + 1e-6)
    # with the meta rows (their class mean), every class totals n / K, as class_weight="balanced"
    np.testing.assert_allclose(class_totals(wt.sample_weight(), y), y.size / 3, rtol=1e-6)
    # lam=inf is exactly class_weight="balanced", on the weighted rows and on all rows
    inf = OTSampleWeighter(lam=np.inf, random_state=0).fit(X, y)
    keep = ~wt.meta_mask_
    counts = np.bincount(y[keep])
    np.testing.assert_allclose(inf.sample_weight(meta_weight=0)[keep], keep.sum() / (3 * counts[y[keep]]), rtol=1e-9)
    np.testing.assert_allclose(inf.sample_weight(), compute_sample_weight("balanced", y), rtol=1e-9)


def test_one_target_closed_form_is_pots_solution():
    """With prototypes, the class_conditional weights are explicit; POT's solve of the same block agrees."""
    from otreweight.transport import semi_relaxed_ot

    rng = np.random.RandomState(0)
    block = torch.from_numpy(rng.uniform(0, 1, size=(40, 1)))
    prior = torch.full((40,), 1 / 40, dtype=torch.float64)
    for lam in (0.1, 1.0):
        pot = semi_relaxed_ot(block, prior, torch.ones(1, dtype=torch.float64), eps=0.1, lam=lam, tol=1e-12,
                              max_iter=20000).weights
        np.testing.assert_allclose(pot.numpy(), torch.softmax(-block[:, 0] / (lam + 0.1), 0).numpy(), rtol=1e-8)


def test_descent_run_long_drains_the_rare_class_but_not_the_default():
    """The documented failure of the paper's objective: run to its minimum it leaks a rare class's mass."""
    X, y = blobs([2000, 3], seed=2, spread=3.0)  # 1999 : 2 weighted, far above e^(1/0.3) = 28
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        d = OTSampleWeighter(objective="descent", init="balanced", max_iter=300, n_iter_no_change=300,
                             learning_rate=0.01, cost="label", eps=0.3, n_meta_per_class=1, random_state=0).fit(X, y)
    assert d.converged_
    assert d.class_mass_[1] < 0.05  # from its balanced start 1/2 down to under 5%
    cc = OTSampleWeighter(cost="label", eps=0.3, n_meta_per_class=1, random_state=0).fit(X, y)
    np.testing.assert_allclose(cc.class_mass_, 0.5, atol=1e-6)


# -- convergence warnings ---------------------------------------------------------------------------
def test_convergence_warnings():
    X, y = blobs([60, 20, 6], seed=3)
    for kw in ({"objective": "descent", "max_iter": 2}, {"objective": "kl_regularized", "sinkhorn_max_iter": 2},
               {"objective": "class_conditional", "targets": "whole", "sinkhorn_max_iter": 1}):
        with pytest.warns(ConvergenceWarning) as rec:
            wt = OTSampleWeighter(random_state=0, **kw).fit(X, y)
        assert not wt.converged_, kw
        assert all("\n" not in str(r.message) for r in rec)
    with pytest.warns(ConvergenceWarning, match="n_iter_no_change"):
        OTSampleWeighter(objective="descent", learning_rate=1e-6, n_iter_no_change=2, tol=0.5, random_state=0).fit(X, y)
    for objective in ("class_conditional", "kl_regularized"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            assert OTSampleWeighter(objective=objective, random_state=0).fit(X, y).converged_


def test_descent_backtracking_is_not_lack_of_progress():
    """A step that is undone halves the rate but does not count towards n_iter_no_change."""
    X, y = blobs([60, 20, 6], seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        wt = OTSampleWeighter(objective="descent", learning_rate=1e4, n_iter_no_change=1, max_iter=60,
                              random_state=0).fit(X, y)
    assert wt.n_backtracks_ >= 3  # three undone steps would have stopped the old rule
    assert len(wt.ot_values_) > 2 and wt.ot_values_[-1] < wt.ot_values_[0]
    assert np.all(np.diff(wt.ot_values_) <= 1e-12)
    # and the descent converges when given the passes: value within tol of its known minimum
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        wt = OTSampleWeighter(objective="descent", learning_rate=10.0, max_iter=3000, n_iter_no_change=3000, tol=0.05,
                              random_state=0).fit(X, y)
    assert wt.converged_


# -- sparse input ---------------------------------------------------------------------------------
def sparse_problem(n=120, d=300, k=4, seed=5):
    rng = np.random.RandomState(seed)
    y = rng.choice(k, size=n, p=[0.6, 0.25, 0.1, 0.05])
    X = sp.random(n, d, density=0.05, random_state=rng, format="csr")
    X = X + sp.csr_matrix((np.ones(n), (np.arange(n), y * 10)), shape=(n, d))  # a class-dependent term
    return sp.csr_matrix(X), y


@pytest.mark.parametrize("kw", [{}, {"targets": "whole"}, {"objective": "kl_regularized"},
                                {"objective": "descent", "max_iter": 20},
                                {"transformer": StandardScaler(with_mean=False)}],
                         ids=["cc", "cc-whole", "kl", "descent", "scaler"])
def test_sparse_same_weights_as_dense(kw):
    X, y = sparse_problem()
    kw = {"transformer": "passthrough", **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ws = OTSampleWeighter(random_state=0, **kw).fit(X, y).weights_
        wd = OTSampleWeighter(random_state=0, **kw).fit(X.toarray(), y).weights_
    np.testing.assert_allclose(ws, wd, rtol=0, atol=1e-6)
    keep = wd > 0  # rows of the drawn meta set are 0 in both
    np.testing.assert_allclose(ws[keep] / wd[keep], 1.0, atol=1e-6)
    # the default for sparse input is the rows as given
    default = OTSampleWeighter(random_state=0).fit(X, y).weights_
    np.testing.assert_allclose(default, OTSampleWeighter(transformer="passthrough", random_state=0).fit(X, y).weights_)


def test_sparse_classifier_and_memory():
    """A TF-IDF-sized sparse matrix is never densified: peak memory of the weighter's fit ~ its size."""
    rng = np.random.RandomState(0)
    n, d, k = 3000, 20000, 20
    y = np.minimum((rng.pareto(1.0, size=n) * 2).astype(int), k - 1)
    X = sp.random(n, d, density=0.004, random_state=rng, format="csr", dtype=np.float64)
    size = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes  # ~2.9 MB (dense: 480 MB)
    tracemalloc.start()
    wt = OTSampleWeighter(random_state=0).fit(X, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2.0 * size, (peak, size)
    np.testing.assert_allclose(wt.class_mass_, 1 / len(np.unique(y)), atol=1e-6)
    clf = OTReweightedClassifier(LogisticRegression(max_iter=200), random_state=0).fit(X[:600], y[:600])
    assert clf.predict(X[600:700]).shape == (100,)


# -- meta sets without a class, or unbalanced ---------------------------------------------------
def test_class_without_meta_example_uses_its_own_training_examples():
    X, y = blobs([50, 20, 3], seed=6)
    Xm, ym = blobs([10, 10, 0], seed=7)
    for objective in ("class_conditional", "kl_regularized", "descent"):
        for targets in ("prototype", "whole"):
            with pytest.warns(MetaSetWarning, match=r"no example of class\(es\) \[2\].*own training examples"), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                wt = OTSampleWeighter(objective=objective, targets=targets, random_state=0).fit(X, y, meta_X=Xm,
                                                                                               meta_y=ym)
            assert wt.own_target_classes_.tolist() == [2]
            assert np.isfinite(wt.weights_).all() and (wt.weights_ > 0).all()
            if objective == "class_conditional":
                np.testing.assert_allclose(wt.class_mass_, 1 / 3, atol=1e-6)


def test_unbalanced_meta_set_does_not_pass_its_imbalance_on():
    """1 meta example of class 2 against 10 of the others: class masses stay balanced (whole targets)."""
    X, y = blobs([50, 20, 3], seed=8)
    Xm, ym = blobs([10, 10, 1], seed=9)
    cc = OTSampleWeighter(targets="whole", random_state=0).fit(X, y, meta_X=Xm, meta_y=ym)
    np.testing.assert_allclose(cc.class_mass_, 1 / 3, atol=1e-6)
    kl = OTSampleWeighter(objective="kl_regularized", targets="whole", random_state=0).fit(X, y, meta_X=Xm, meta_y=ym)
    # the balanced prior and balanced target masses: the rare class is not cut to its 1/21 meta share
    assert kl.class_mass_.min() > 0.25
