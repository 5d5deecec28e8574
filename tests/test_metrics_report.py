"""Tests of the imbalanced-classification report functions in otreweight.metrics."""
from collections import Counter

import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from otreweight import OTReweightError
from otreweight.metrics import (
    classification_metrics,
    classification_report_imbalanced,
    geometric_mean_score,
    imbalanced_scores,
    per_class_table,
)

Y_TRUE = np.array(["a", "a", "a", "a", "b", "b", "c", "c", "c", "c"])
Y_PRED = np.array(["a", "a", "b", "c", "b", "b", "c", "c", "a", "c"])
TRAIN = Counter({"a": 300, "b": 50, "c": 8})


def test_per_class_table_by_hand():
    t = per_class_table(Y_TRUE, Y_PRED)
    assert t["label"].tolist() == ["a", "b", "c"]
    # a: TP 2, FP 1, FN 2, TN 5 | b: TP 2, FP 1, FN 0, TN 7 | c: TP 3, FP 1, FN 1, TN 5
    assert np.allclose(t["precision"], [2 / 3, 2 / 3, 3 / 4])
    assert np.allclose(t["recall"], [2 / 4, 2 / 2, 3 / 4])
    assert np.allclose(t["specificity"], [5 / 6, 7 / 8, 5 / 6])
    assert t["support"].tolist() == [4, 2, 4]
    assert np.allclose(t["f1"], f1_score(Y_TRUE, Y_PRED, average=None))
    assert np.allclose(t["precision"], precision_score(Y_TRUE, Y_PRED, average=None))


def test_groups_from_counter_or_array():
    t = per_class_table(Y_TRUE, Y_PRED, train_counts=TRAIN)
    assert t["train"].tolist() == [300, 50, 8] and t["group"].tolist() == ["many", "medium", "few"]
    t2 = per_class_table(Y_TRUE, Y_PRED, train_counts=[300, 50, 8], many_threshold=40, few_threshold=10)
    assert t2["group"].tolist() == ["many", "many", "few"]
    with pytest.raises(OTReweightError, match="one count per class"):
        per_class_table(Y_TRUE, Y_PRED, train_counts=[1, 2])
    with pytest.raises(OTReweightError, match="no count for class"):
        per_class_table(Y_TRUE, Y_PRED, train_counts={"a": 1, "b": 2})


def test_geometric_mean_and_scores():
    g = geometric_mean_score(Y_TRUE, Y_PRED)
    assert g == pytest.approx((0.5 * 1.0 * 0.75) ** (1 / 3))
    s = imbalanced_scores(Y_TRUE, Y_PRED, train_counts=TRAIN)
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert s["macro_recall"] == pytest.approx(recall_score(Y_TRUE, Y_PRED, average="macro"))
    assert s["accuracy"] == pytest.approx(0.7)
    assert (s["many"], s["medium"], s["few"]) == pytest.approx((0.5, 1.0, 0.75))
    assert s["min_recall"] == pytest.approx(0.5)
    # a class never recognised: gmean 0, or the correction in its place
    yp = np.where(Y_TRUE == "b", "a", Y_PRED)
    assert geometric_mean_score(Y_TRUE, yp) == 0.0
    assert geometric_mean_score(Y_TRUE, yp, correction=0.01) == pytest.approx((0.5 * 0.01 * 0.75) ** (1 / 3))


def test_agrees_with_classification_metrics_on_int_labels():
    rng = np.random.RandomState(0)
    yt = rng.randint(0, 4, 200)
    yp = np.where(rng.rand(200) < 0.7, yt, rng.randint(0, 4, 200))
    counts = [150, 60, 20, 5]
    old = classification_metrics(yt, yp, train_counts=counts)
    new = imbalanced_scores(yt, yp, train_counts=counts)
    for k in ("accuracy", "balanced_accuracy", "gmean", "many", "medium", "few"):
        assert new[k] == pytest.approx(old[k]), k


def test_report_text_and_dict():
    text = classification_report_imbalanced(Y_TRUE, Y_PRED, train_counts=TRAIN, target_names=["A", "B", "C"])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["class", "train", "group"]
    assert lines[1].split()[:4] == ["A", "300", "many", "4"]
    assert "balanced accuracy" in text and "geometric mean of recalls" in text
    assert "few-shot recall (< 20 train, 1 classes)" in text
    d = classification_report_imbalanced(Y_TRUE, Y_PRED, output_dict=True)
    assert set(d) == {"per_class", "scores"} and "many" not in d["scores"]
    plain = classification_report_imbalanced(Y_TRUE, Y_PRED, digits=2)
    assert "train" not in plain.splitlines()[0] and "0.50" in plain
    with pytest.raises(OTReweightError, match="target_names"):
        classification_report_imbalanced(Y_TRUE, Y_PRED, target_names=["x"])


def test_on_a_fitted_classifier():
    X, y = load_wine(return_X_y=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[::2], y[::2])
    text = classification_report_imbalanced(y[1::2], clf.predict(X[1::2]), train_counts=np.bincount(y[::2]),
                                            many_threshold=30, few_threshold=25)
    assert len(text.splitlines()) == 1 + 3 + 1 + 7 + 3


def test_bad_input():
    with pytest.raises(OTReweightError, match="length mismatch"):
        per_class_table([0, 1, 1], [0, 1])
    with pytest.raises(OTReweightError, match="zero examples"):
        geometric_mean_score([], [])
    with pytest.raises(OTReweightError, match="correction"):
        geometric_mean_score([0, 1], [0, 1], correction=2)
    with pytest.raises(OTReweightError, match="1-d"):
        per_class_table([[0, 1]], [[0, 1]])
