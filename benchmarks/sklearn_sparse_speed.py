"""Time and memory of the OT weighter on sparse TF-IDF, against the LogisticRegression fit that follows it.

Data: the 20 Newsgroups training documents (/work/shared/data/20newsgroups, 11,293 documents),
``TfidfVectorizer(sublinear_tf=True, min_df=2)`` fitted on them (sparse CSR, float64). Three label sets:

* ``20ng``: the 20 newsgroups, all 11,293 documents;
* ``20ng-lt``: the newsgroups made long-tailed (exponential profile, IF 100, ``make_long_tailed``);
* ``20ng-50``: 50 classes of uneven size (timing only: these labels are ours): each newsgroup is cut
  into 3 (the first 10 groups) or 2 (the others) clusters by ``MiniBatchKMeans`` on its TF-IDF rows,
  every document kept.

For each: the fit time of :class:`~otreweight.sklearn.OTSampleWeighter` (meta set of 10 per class
drawn from the training rows, as ``OTReweightedClassifier`` does) for several settings, its peak
Python-heap memory (``tracemalloc``, which sees NumPy / SciPy buffers) against the size of the
CSR input, and the fit time of ``LogisticRegression(max_iter=1000)`` on the learned
``sample_weight`` (what ``OTReweightedClassifier`` fits next), all on one thread, in one process.

Run: ``python benchmarks/sklearn_sparse_speed.py [--repeats 3]``
"""
from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from otreweight import make_long_tailed
from otreweight.data.sources.text import load_text
from otreweight.sklearn import MetaSetWarning, OTSampleWeighter

SETTINGS = {
    "default (class_conditional, prototype)": {},
    "class_conditional, whole": {"targets": "whole"},
    "kl_regularized": {"objective": "kl_regularized"},
    "descent (former default)": {"objective": "descent"},
}


def label_sets(X, y):
    out = {"20ng": (X, y)}
    split = make_long_tailed(y, 100, n_meta_per_class=0, n_val_per_class=0, seed=0)
    out["20ng-lt"] = (X[split.train], y[split.train])
    y50 = np.empty_like(y)
    nxt = 0
    for g in range(20):
        rows = np.flatnonzero(y == g)
        k = 3 if g < 10 else 2
        cl = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=3).fit_predict(X[rows])
        y50[rows] = nxt + cl
        nxt += k
    out["20ng-50"] = (X, y50)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", MetaSetWarning)
    ds = load_text(Path("/work/shared/data/20newsgroups"))
    t = time.perf_counter()
    X = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float64).fit_transform(ds.x_train)
    print(f"TF-IDF of {X.shape[0]} documents: {X.shape[1]} terms, {X.nnz} non-zeros ({time.perf_counter() - t:.1f} s)")
    y = np.asarray(ds.y_train)
    print("| labels | documents x terms | classes (sizes) | OT setting | OT fit s | LogisticRegression fit s | ratio "
          "| OT peak memory / input |")
    print("|---|---|---|---|---|---|---|---|")
    with threadpool_limits(1):
        for name, (Xs, ys) in label_sets(X, y).items():
            size = Xs.data.nbytes + Xs.indices.nbytes + Xs.indptr.nbytes
            counts = np.bincount(ys)
            lr_s, ot_s, peak = [], {}, {}
            for setting, kw in SETTINGS.items():
                times = []
                for r in range(args.repeats):
                    w = OTSampleWeighter(random_state=r, **kw)
                    tracemalloc.start()
                    t = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        w.fit(Xs, ys)
                    times.append(time.perf_counter() - t)
                    peak[setting] = max(peak.get(setting, 0), tracemalloc.get_traced_memory()[1])
                    tracemalloc.stop()
                    if setting.startswith("default") and r == 0:
                        for _ in range(args.repeats):
                            t = time.perf_counter()
                            LogisticRegression(max_iter=1000).fit(Xs, ys, sample_weight=w.sample_weight())
                            lr_s.append(time.perf_counter() - t)
                ot_s[setting] = float(np.median(times))
            lr = float(np.median(lr_s))
            for setting in SETTINGS:
                print(f"| {name} | {Xs.shape[0]} x {Xs.shape[1]} | {len(counts)} ({counts.min()}-{counts.max()}) | {setting} "
                      f"| {ot_s[setting]:.2f} | {lr:.2f} | {ot_s[setting] / lr:.2f} | {peak[setting] / size:.2f} |", flush=True)


if __name__ == "__main__":
    main()
