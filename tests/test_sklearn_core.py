"""The scikit-learn weighter and the training re-weighter solve one class-conditional objective (one
code path, transport.class_conditional_blocks); meta_X columns are matched to X's by name."""
import math

import numpy as np
import pytest
import torch

from otreweight import OTReweighter, OTReweightError, build_targets
from otreweight.sklearn import OTReweightedClassifier, OTSampleWeighter
from test_sklearn_objectives import blobs as gaussian_blobs
from test_sklearn_objectives import one_thread  # noqa: F401  (autouse: one thread in this module too)


def blobs(counts, d=6, seed=0, spread=1.0):
    return gaussian_blobs(counts, d, seed, spread, scale=2.0)


@pytest.mark.parametrize("targets", ["prototype", "whole"])
@pytest.mark.parametrize("lam", [0.3, 1.0, math.inf])
@pytest.mark.parametrize("cost", ["combined", "feature"])
def test_weighter_and_reweighter_give_the_same_class_conditional_weights(targets, lam, cost):
    """Same features, meta set and parameters: OTSampleWeighter's weights_ are OTReweighter's
    dataset-scope weights normalised to total 1 (to 1e-6 relative)."""
    X, y = blobs([300, 60, 12, 3], seed=1)
    Xm, ym = blobs([8, 6, 5, 4], seed=2)  # unbalanced meta set, several targets per class for "whole"
    kw = dict(eps=0.1, lam=lam, alpha=0.6)
    wt = OTSampleWeighter(objective="class_conditional", targets=targets, transformer="passthrough", cost=cost,
                          sinkhorn_tol=1e-9, sinkhorn_max_iter=5000, **kw).fit(X, y, meta_X=Xm, meta_y=ym)
    rw = OTReweighter(y, 4, objective="class_conditional", scope="dataset", init="uniform", cost=cost, tol=1e-9,
                      max_iter=5000, **kw)
    rw.refresh(torch.from_numpy(X), build_targets(targets, torch.from_numpy(Xm), torch.from_numpy(ym), 4))
    core = rw.weights().double().numpy()
    core = core / core.sum()
    np.testing.assert_allclose(wt.weights_, core, rtol=1e-6, atol=0)
    assert wt.weights_.max() / wt.weights_.min() > (1.0 if math.isinf(lam) else 1.5)  # not a trivial answer
    # and the same objective value (the sklearn weighter reports it in ot_values_)
    assert wt.ot_values_[0] == pytest.approx(float(rw.last_ot_value), rel=1e-6, abs=1e-9)


def test_meta_dataframe_columns_are_aligned_by_name():
    pd = pytest.importorskip("pandas")
    X, y = blobs([80, 20, 6], d=4, seed=3)
    Xm, ym = blobs([5, 5, 5], d=4, seed=4)
    cols = ["age", "height", "income", "score"]
    df, meta = pd.DataFrame(X, columns=cols), pd.DataFrame(Xm, columns=cols)
    shuffled = meta[["income", "age", "score", "height"]]
    for est in (OTSampleWeighter(), OTSampleWeighter(targets="whole", objective="kl_regularized")):
        ref = est.fit(df, y, meta_X=meta, meta_y=ym).weights_.copy()
        np.testing.assert_array_equal(est.fit(df, y, meta_X=shuffled, meta_y=ym).weights_, ref)
        # positional input (no names) is taken as given, as scikit-learn does
        np.testing.assert_array_equal(est.fit(df, y, meta_X=Xm, meta_y=ym).weights_, ref)
    # the columns in another order really give other weights: the alignment is what keeps them
    swapped = pd.DataFrame(Xm[:, [2, 0, 3, 1]], columns=cols)
    assert not np.allclose(OTSampleWeighter().fit(df, y, meta_X=swapped, meta_y=ym).weights_, ref)
    clf = OTReweightedClassifier(random_state=0).fit(df, y, meta_X=shuffled, meta_y=ym)
    np.testing.assert_array_equal(clf.weighter_.weights_, OTSampleWeighter(random_state=0).fit(
        df, y, meta_X=meta, meta_y=ym).weights_)
    renamed = meta.rename(columns={"income": "salary"})
    with pytest.raises(OTReweightError, match=r"\['salary'\] not in X, \['income'\] missing from meta_X") as e:
        OTSampleWeighter().fit(df, y, meta_X=renamed, meta_y=ym)
    assert "\n" not in str(e.value)
