"""Is the scikit-learn OT default fair? OT weights against ``class_weight="balanced"`` on long-tailed data.

Every data set is split in half (stratified, seeded); the training half is made long-tailed with
:func:`otreweight.make_long_tailed` (exponential profile), the other half (or the official test set)
is the test set, untouched. For each seed every weighting below is fitted on exactly the same
training rows (the OT weighter draws its meta set from them):

* ``plain``: no weights;
* ``balanced``: ``class_weight="balanced"``;
* ``ot-cc``: :class:`~otreweight.sklearn.OTReweightedClassifier` at its defaults
  (``objective="class_conditional"``, ``lam=1``): the recommended setting;
* ``ot-cc-lam0.1``: the same with a 10x stronger within-class OT weighting;
* ``ot-kl``: ``objective="kl_regularized"`` (``lam=1``, class-balanced prior);
* ``ot-descent``: ``objective="descent"``, the weighter's former default (gradient steps from
  uniform weights, early-stopped; its ConvergenceWarnings are counted, not shown).

Printed: balanced accuracy on the test set (mean +- std over seeds, ddof=0), the per-seed paired
difference with ``balanced`` (mean +- std, seeds higher / equal / lower), and for the OT rows the
class-mass balance ``max_c |K * mass_c - 1|`` of the learned weights (max over seeds), and the mean
fit time (for OT rows: the weighter and the estimator).

Data sets: ``digits`` (IF 20), ``breast_cancer`` (IF 10, 170 : 17), ``wine`` and ``iris`` (IF 10),
all bundled with scikit-learn; ``mnist`` (/work/shared/data/mnist, official test set, IF 100, pixels
/ 255); ``20ng`` (/work/shared/data/20newsgroups, TF-IDF of the training documents, official test
set, IF 100; sparse input, never densified). Estimators: ``logistic`` (StandardScaler +
LogisticRegression for dense data, LogisticRegression on TF-IDF) on all, ``hist_gb``
(HistGradientBoostingClassifier) on digits and breast cancer (on the smaller sets its default leaves
of 20 examples cannot split).

Run: ``python benchmarks/sklearn_fair_default.py [--seeds 5] [--only digits,wine] [--out results.json]``
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from otreweight import make_long_tailed
from otreweight.sklearn import MetaSetWarning, OTReweightedClassifier, OTSampleWeighter

SHARED = Path("/work/shared/data")
WEIGHTINGS = {
    "plain": None,
    "balanced": None,
    "ot-cc": {},
    "ot-cc-lam0.1": {"lam": 0.1},
    "ot-kl": {"objective": "kl_regularized"},
    "ot-descent": {"objective": "descent"},
}


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(name: str, seed: int):
    """(X_pool, y_pool, X_test, y_test, imbalance factor, class order, n_max)."""
    if name == "mnist":
        d = SHARED / "mnist"
        x = _idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
        xt = _idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
        return x, _idx(d / "train-labels-idx1-ubyte.gz"), xt, _idx(d / "t10k-labels-idx1-ubyte.gz"), 100.0, None, 1000
    if name == "20ng":
        from otreweight.data.sources.text import load_text

        ds = load_text(SHARED / "20newsgroups")
        return (np.asarray(ds.x_train, dtype=object), np.asarray(ds.y_train), np.asarray(ds.x_test, dtype=object),
                np.asarray(ds.y_test), 100.0, None, None)
    loader, imf, order, n_max = {
        "digits": (load_digits, 20.0, None, None),
        "breast_cancer": (load_breast_cancer, 10.0, [1, 0], 170),
        "wine": (load_wine, 10.0, None, None),
        "iris": (load_iris, 10.0, None, None),
    }[name]
    X, y = loader(return_X_y=True)
    X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    return X_pool, y_pool, X_test, y_test, imf, order, n_max


def estimator(family: str, weighting: str, seed: int, sparse: bool):
    cw = "balanced" if weighting == "balanced" else None
    if family == "logistic":
        base = LogisticRegression(max_iter=2000, class_weight=cw)
    else:
        base = HistGradientBoostingClassifier(class_weight=cw, random_state=seed)
    if WEIGHTINGS[weighting] is not None:
        base = OTReweightedClassifier(base, weighter=OTSampleWeighter(**WEIGHTINGS[weighting]), random_state=seed)
    return make_pipeline(StandardScaler(), base) if family == "logistic" and not sparse else base


def one_run(name: str, seed: int, families) -> dict:
    X_pool, y_pool, X_test, y_test, imf, order, n_max = load(name, seed)
    split = make_long_tailed(y_pool, imf, n_meta_per_class=0, n_val_per_class=0, class_order=order,
                             n_max=n_max, seed=seed)
    X_train, y_train = X_pool[split.train], y_pool[split.train]
    sparse = name == "20ng"
    if sparse:  # TF-IDF fitted on the training documents only
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float64)
        X_train, X_test = vec.fit_transform(X_train), vec.transform(X_test)
    out = {"counts": split.train_counts.tolist(), "shape": list(X_train.shape)}
    for family in families:
        for weighting in WEIGHTINGS:
            clf = estimator(family, weighting, seed, sparse)
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always", ConvergenceWarning)
                warnings.simplefilter("ignore", MetaSetWarning)
                clf.fit(X_train, y_train)
            fit_s = time.perf_counter() - t
            bacc = balanced_accuracy_score(y_test, clf.predict(X_test))
            row = {"bacc": bacc, "fit_s": fit_s}
            ot = clf[-1] if hasattr(clf, "steps") else clf
            if isinstance(ot, OTReweightedClassifier):
                w = ot.weighter_
                k = len(w.classes_)
                row["mass_dev"] = float(np.abs(k * w.class_mass_ - 1).max())
                row["conv_warnings"] = sum(issubclass(r.category, ConvergenceWarning) for r in rec)
            out[family, weighting] = row
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", default="digits,breast_cancer,wine,iris,mnist,20ng")
    parser.add_argument("--out", default=None, help="write every per-seed number to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    dump = {}
    lines = ["| data set | estimator | weighting | balanced accuracy | minus balanced (paired) | higher/equal/lower "
             "| class-mass dev. | fit s |", "|---|---|---|---|---|---|---|---|"]
    for name in args.only.split(","):
        families = ("logistic", "hist_gb") if name in ("digits", "breast_cancer") else ("logistic",)
        with threadpool_limits(1):
            runs = [one_run(name, seed, families) for seed in range(args.seeds)]
        print(f"{name}: training counts {runs[0]['counts']} (shape {runs[0]['shape']})", flush=True)
        dump[name] = {"counts": runs[0]["counts"], "shape": runs[0]["shape"]}
        for family in families:
            ref = np.array([r[family, "balanced"]["bacc"] for r in runs])
            for weighting in WEIGHTINGS:
                rows = [r[family, weighting] for r in runs]
                b = np.array([r["bacc"] for r in rows])
                d = b - ref
                dump[name][f"{family}/{weighting}"] = rows
                extra = "| "
                if "mass_dev" in rows[0]:
                    cw = sum(r["conv_warnings"] for r in rows)
                    extra = f"| {max(r['mass_dev'] for r in rows):.2g}{f' ({cw} ConvergenceWarnings)' if cw else ''} "
                extra += f"| {np.mean([r['fit_s'] for r in rows]):.2f} |"
                diff = "" if weighting == "balanced" else f"{d.mean():+.3f} +- {d.std():.3f}"
                hel = "" if weighting == "balanced" else f"{(d > 0).sum()}/{(d == 0).sum()}/{(d < 0).sum()}"
                lines.append(f"| {name} | {family} | {weighting} | {b.mean():.3f} +- {b.std():.3f} | {diff} | {hel} {extra}")
        print("\n".join(lines[-len(families) * len(WEIGHTINGS):]), flush=True)
    print()
    print("\n".join(lines))
    print(f"\n{args.seeds} seeds, std over seeds (ddof=0); total {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(dump, indent=1, default=float))


if __name__ == "__main__":
    main()
