"""
scikit-learn with sparse TF-IDF features
========================================

20 Newsgroups made long-tailed (imbalance factor 100: 377 training documents of the largest class
down to 3 of the smallest), TF-IDF features kept sparse, and a ``LogisticRegression`` fitted three
ways: without weights, with ``class_weight="balanced"``, and with the OT sample weights of
:class:`otreweight.sklearn.OTReweightedClassifier` (its default: every class gets the same total
mass, spread inside the class by optimal transport towards its meta examples). The sparse matrix is
never densified. About 30 s on two CPU cores.

Data: ``20newsgroups/`` in ``../shared/data`` next to the repository; elsewhere, set
``OTREWEIGHT_DATA`` to the folder that holds it.
"""
import gzip
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score

import otreweight as otr
from otreweight.sklearn import OTReweightedClassifier

here = Path(globals().get("__file__", "examples/x.py")).resolve().parent
repo = next(p for p in (here, *here.parents) if (p / "pyproject.toml").exists())  # the repository
data = Path(os.environ.get("OTREWEIGHT_DATA") or repo.parent / "shared" / "data")
folder = data / "20newsgroups"
if not folder.exists():
    raise SystemExit(f"{folder} not found: set OTREWEIGHT_DATA to the folder holding 20newsgroups/")


def read_tsv(path):
    labels, texts = [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            label, _, text = line.rstrip("\n").partition("\t")
            labels.append(label)
            texts.append(text)
    return labels, texts


train_labels, train_texts = read_tsv(folder / "train.tsv.gz")
test_labels, test_texts = read_tsv(folder / "test.tsv.gz")
classes = sorted(set(train_labels))
y_all = np.array([classes.index(c) for c in train_labels])
y_test = np.array([classes.index(c) for c in test_labels])

# the long-tailed training set (no meta or validation split: the OT weighter draws its own meta set)
split = otr.make_long_tailed(y_all, imbalance_factor=100, n_meta_per_class=0, n_val_per_class=0, seed=0)
idx = split.train
vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
x_train = vec.fit_transform([train_texts[i] for i in idx])
x_test = vec.transform(test_texts)
y_train = y_all[idx]
print(f"training set: {x_train.shape[0]} documents x {x_train.shape[1]} terms (sparse, "
      f"{x_train.nnz:,} non-zeros); per class {np.bincount(y_train).max()} ... {np.bincount(y_train).min()}")

models = {
    "plain": LogisticRegression(max_iter=1000),
    "balanced": LogisticRegression(max_iter=1000, class_weight="balanced"),
    "OT": OTReweightedClassifier(LogisticRegression(max_iter=1000), random_state=0),
}
recalls = {}
for name, model in models.items():
    model.fit(x_train, y_train)
    pred = model.predict(x_test)
    recalls[name] = recall_score(y_test, pred, average=None)
    print(f"{name:>9}: balanced accuracy {balanced_accuracy_score(y_test, pred):.3f}")

# %%
# Per-class recall against the number of training documents of the class: the weighting lifts the
# rare classes; OT's default keeps the class totals of ``balanced``.
counts = np.bincount(y_train, minlength=len(classes))
order = np.argsort(-counts)
fig, ax = plt.subplots(figsize=(7.5, 3.4))
for name, r in recalls.items():
    ax.plot(range(len(classes)), r[order], marker="o", ms=3, label=name)
ax.set_xticks(range(len(classes)), counts[order], fontsize=7)
ax.set_xlabel("training documents of the class (classes from largest to smallest)")
ax.set_ylabel("test recall")
ax.legend()
ax.set_title("20 Newsgroups-LT TF-IDF, LogisticRegression")
fig.tight_layout()
plt.show()
