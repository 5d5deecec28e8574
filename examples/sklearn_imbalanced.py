"""
OT sample weights for scikit-learn estimators on imbalanced tabular data
========================================================================

Two of scikit-learn's bundled data sets (no download) are made long-tailed:

* ``digits`` (10 classes): the training half keeps an exponential profile, imbalance factor 20
  (about 90 examples of the most frequent digit down to 4 of the rarest);
* ``breast_cancer`` (2 classes): 170 benign and 17 malignant training examples (IF 10).

The other half of each data set is the test set (stratified, not made imbalanced). For each
data set, estimator family (logistic regression on standardised inputs, histogram gradient
boosting) and seed, three ways to weight the training examples are compared:

* ``plain``: no weights;
* ``balanced``: ``class_weight="balanced"`` (each class's weights sum to ``n / K``);
* ``OT``: :class:`otreweight.sklearn.OTReweightedClassifier` with its default
  :class:`~otreweight.sklearn.OTSampleWeighter` (meta set of up to 10 examples per class drawn
  from the same training data, so every method sees exactly the same rows).

Balanced accuracy and the geometric mean of the per-class recalls on the test set are printed
as mean +- standard deviation over the seeds, as a Markdown table, followed by the per-seed
(paired) difference of balanced accuracy between OT and ``class_weight="balanced"``.

Run: ``python examples/sklearn_imbalanced.py [--seeds 5]``

Everything runs on one thread (torch and the OpenMP/BLAS pools): these problems are small, and on a
shared machine several spinning thread pools slowed some fits down more than tenfold.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from otreweight import make_long_tailed
from otreweight.metrics import geometric_mean_score
from otreweight.sklearn import MetaSetWarning, OTReweightedClassifier

DATASETS = {
    # name: (loader, imbalance factor, class order (the first class is the most frequent), n_max)
    "digits": (load_digits, 20.0, None, None),
    "breast_cancer": (load_breast_cancer, 10.0, [1, 0], 170),
}


def estimator(family: str, weights: str, seed: int):
    """The classifier of one family, with the given way of weighting the examples."""
    cw = "balanced" if weights == "balanced" else None
    if family == "logistic":
        base = LogisticRegression(max_iter=2000, class_weight=cw)
    else:
        base = HistGradientBoostingClassifier(class_weight=cw, random_state=seed)
    if weights == "OT":
        base = OTReweightedClassifier(base, random_state=seed)
    # Standardising first is what a logistic regression needs; trees do not care.
    return make_pipeline(StandardScaler(), base) if family == "logistic" else base


def one_run(name: str, seed: int) -> dict:
    loader, imf, order, n_max = DATASETS[name]
    X, y = loader(return_X_y=True)
    X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    split = make_long_tailed(y_pool, imf, n_meta_per_class=0, n_val_per_class=0, class_order=order,
                             n_max=n_max, seed=seed)
    X_train, y_train = X_pool[split.train], y_pool[split.train]
    out = {"counts": split.train_counts}
    for family in ("logistic", "hist_gb"):
        for weights in ("plain", "balanced", "OT"):
            t = time.perf_counter()
            clf = estimator(family, weights, seed).fit(X_train, y_train)
            pred = clf.predict(X_test)
            out[family, weights] = (
                balanced_accuracy_score(y_test, pred),
                geometric_mean_score(y_test, pred),
                time.perf_counter() - t,
            )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", MetaSetWarning)  # the drawn meta set is intended here
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for name in DATASETS:
        with threadpool_limits(1):
            runs = [one_run(name, seed) for seed in range(args.seeds)]
        print(f"{name}: training counts per class {runs[0]['counts'].tolist()}")
        for family in ("logistic", "hist_gb"):
            for weights in ("plain", "balanced", "OT"):
                r = np.array([run[family, weights] for run in runs])
                rows.append((name, family, weights, r[:, 0], r[:, 1], r[:, 2].mean()))
    print()
    print("| data set | estimator | weights | balanced accuracy | geometric mean | fit+predict s |")
    print("|---|---|---|---|---|---|")
    for name, family, weights, bacc, gm, secs in rows:
        print(
            f"| {name} | {family} | {weights} | {bacc.mean():.3f} +- {bacc.std():.3f} "
            f"| {gm.mean():.3f} +- {gm.std():.3f} | {secs:.2f} |"
        )
    print("\nOT minus balanced, paired by seed (balanced accuracy): mean +- std, seeds OT higher / equal / lower")
    by_key = {(r[0], r[1], r[2]): r[3] for r in rows}
    for name in DATASETS:
        for family in ("logistic", "hist_gb"):
            d = by_key[name, family, "OT"] - by_key[name, family, "balanced"]
            print(
                f"  {name:<14} {family:<9} {d.mean():+.3f} +- {d.std():.3f}   "
                f"{(d > 0).sum()} / {(d == 0).sum()} / {(d < 0).sum()}"
            )
    print(f"\n{args.seeds} seeds, std over seeds (ddof=0); total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
