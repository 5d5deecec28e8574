import pytest

from otreweight import OTReweightError, classification_metrics, shot_groups


def test_metrics_by_hand():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 2]
    m = classification_metrics(y_true, y_pred, train_counts=[500, 50, 5])
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class"] == pytest.approx([0.75, 0.5, 1.0])
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert m["gmean"] == pytest.approx((0.75 * 0.5 * 1.0) ** (1 / 3))
    assert (m["many"], m["medium"], m["few"]) == pytest.approx((0.75, 0.5, 1.0))


def test_gmean_zero_and_empty_groups():
    m = classification_metrics([0, 1, 1], [0, 0, 0], train_counts=[200, 150])
    assert m["gmean"] == 0.0
    assert m["few"] is None and m["medium"] is None


def test_custom_thresholds():
    groups = shot_groups([60, 30, 10], many_threshold=50, few_threshold=15)
    assert [g.tolist() for g in groups.values()] == [[0], [1], [2]]


def test_bad_input():
    with pytest.raises(OTReweightError, match="length mismatch"):
        classification_metrics([0, 1], [0])
    with pytest.raises(OTReweightError, match="zero examples"):
        classification_metrics([], [])
    with pytest.raises(OTReweightError, match="lie in 0..1"):
        classification_metrics([0, 2], [0, 1], num_classes=2)
