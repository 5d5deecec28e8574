import numpy as np
import pytest

from otreweight import OTReweightError, long_tail_counts, make_long_tailed


def test_protocol_totals():
    assert sum(long_tail_counts(5000, 10, 100)) == 12406  # CIFAR-10-LT IF 100
    assert sum(long_tail_counts(500, 100, 100)) == 10847  # CIFAR-100-LT IF 100
    assert long_tail_counts(5000, 10, 100)[-1] == 50
    assert long_tail_counts(100, 4, 10, "step") == [100, 100, 10, 10]


@pytest.mark.parametrize("profile", ["exp", "step"])
@pytest.mark.parametrize("imf", [1, 10, 50])
def test_split_counts_follow_the_formula_and_sets_are_disjoint(profile, imf):
    labels = np.repeat(np.arange(5), 300)
    np.random.default_rng(0).shuffle(labels)
    split = make_long_tailed(labels, imf, profile=profile, n_meta_per_class=10, n_val_per_class=20, seed=3)
    expected = [int(270 * (1 / imf) ** (c / 4)) for c in range(5)] if profile == "exp" else [270, 270] + [int(270 / imf)] * 3
    assert split.n_max == 270
    assert split.train_counts.tolist() == expected
    assert np.bincount(labels[split.train], minlength=5).tolist() == expected
    assert np.bincount(labels[split.meta], minlength=5).tolist() == [10] * 5
    assert np.bincount(labels[split.val], minlength=5).tolist() == [20] * 5
    sets = [set(split.train), set(split.meta), set(split.val)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert "total" in split.summary()


def test_seeded_and_ordered():
    labels = np.repeat(np.arange(3), 50)
    a = make_long_tailed(labels, 5, seed=1)
    b = make_long_tailed(labels, 5, seed=1)
    c = make_long_tailed(labels, 5, seed=2)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.meta, b.meta)
    assert not np.array_equal(a.train, c.train)
    rev = make_long_tailed(labels, 5, class_order=[2, 1, 0], seed=1)
    assert rev.train_counts[2] == rev.n_max and rev.train_counts[0] == int(rev.n_max / 5)


def test_explicit_n_max():
    labels = np.repeat(np.arange(2), 100)
    split = make_long_tailed(labels, 4, n_max=40, n_val_per_class=0, seed=0)
    assert split.train_counts.tolist() == [40, 10]
    with pytest.raises(OTReweightError, match="lower n_max"):
        make_long_tailed(labels, 4, n_max=95, n_val_per_class=0)


@pytest.mark.parametrize("imf", [0.5, 0, -3, float("nan")])
def test_bad_imbalance_factor(imf):
    with pytest.raises(OTReweightError, match="imbalance factor"):
        make_long_tailed(np.repeat(np.arange(2), 50), imf)


def test_meta_or_validation_too_large():
    labels = np.array([0] * 40 + [1] * 12)
    with pytest.raises(OTReweightError, match="class 1 has 12 examples"):
        make_long_tailed(labels, 2, n_meta_per_class=5, n_val_per_class=10)


def test_bad_labels():
    with pytest.raises(OTReweightError, match="lie in 0..1"):
        make_long_tailed(np.array([0, 1, 2, 1]), 2, num_classes=2)
    with pytest.raises(OTReweightError, match="integer class indices"):
        make_long_tailed(np.array([0.5, 1.0]), 2)
    with pytest.raises(OTReweightError, match="at least 2 classes"):
        make_long_tailed(np.zeros(50, dtype=int), 2)
    with pytest.raises(OTReweightError, match="unknown imbalance profile"):
        make_long_tailed(np.repeat(np.arange(2), 50), 2, profile="linear")


def test_given_profile_keeps_a_natural_tail_and_copes_with_tiny_classes():
    import numpy as np

    from otreweight.data.longtail import make_long_tailed

    y = np.repeat(np.arange(5), [1, 2, 3, 4, 50])
    s = make_long_tailed(y, 100, profile="given", n_meta_per_class=10, n_val_per_class=20, seed=0)
    assert s.meta_counts.tolist() == [0, 0, 0, 1, 10]
    assert s.val_counts.tolist() == [0, 0, 1, 1, 19]  # validation never outnumbers training
    assert s.train_counts.tolist() == [1, 2, 2, 2, 21]
    parts = [s.train, s.meta, s.val]
    assert sum(len(p) for p in parts) == len(y) and len(np.unique(np.concatenate(parts))) == len(y)
    assert np.bincount(y[s.train], minlength=5).tolist() == s.train_counts.tolist()
    assert s.to_dict()["profile"] == "given"


def test_given_profile_end_to_end_and_ot_with_classes_without_meta(tmp_path, capsys):
    import numpy as np

    from otreweight.cli import main

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [60, 20, 6, 2])
    p = tmp_path / "natural.npz"
    np.savez(p, x_train=rng.normal(size=(len(y), 5)) + y[:, None], y_train=y, x_test=rng.normal(size=(40, 5)),
             y_test=np.arange(40) % 4)
    base = ["train", "--config", "cifar10_lt_if100", "--no-report", "--set", f"data.source={p}", "--set", "model.name=mlp",
            "--set", "data.profile=given", "--set", "stage1.epochs=2", "--set", "stage2.*.epochs=1", "--set",
            "progress=false", "--set", "threads=1"]
    ok = base[:4] + ["--set", "stage2=[{name: cb, method: cb}]"] + base[4:] + ["--set", f"output_dir={tmp_path / 'cb'}"]
    assert main(ok) == 0
    split = __import__("json").loads((tmp_path / "cb" / "split.json").read_text())
    assert split["train_counts"] == [30, 8, 3, 2] and split["meta_counts"] == [10, 6, 1, 0]
    # class 3 has no meta example: OT takes its targets from its own training examples (no error)
    assert main(base + ["--set", f"output_dir={tmp_path / 'ot'}"]) == 0
    assert (tmp_path / "ot" / "results.json").exists() and (tmp_path / "ot" / "stage2_ot_classifier" / "final.json").exists()


def test_cutting_an_imbalanced_pool_needs_allow_cut():
    """exp / step on a pool more imbalanced than the profile (or IF 1 on unequal pools) is refused unless asked for."""
    import numpy as np
    import pytest

    from otreweight import OTReweightError, make_long_tailed

    y = np.repeat(np.arange(3), [400, 40, 4])
    for imf in (1, 10, 50):
        with pytest.raises(OTReweightError, match="more imbalanced than the profile.*profile='given'.*allow_cut") as e:
            make_long_tailed(y, imf, n_meta_per_class=1, n_val_per_class=1)
        assert "\n" not in str(e.value)
    s = make_long_tailed(y, 1, n_meta_per_class=1, n_val_per_class=1, allow_cut=True)
    assert s.train_counts.tolist() == [2, 2, 2]
    assert make_long_tailed(y, 1, profile="given").train.size == 388  # keeps it as it is (meta + val per its rule)
    # IF 1 on slightly unequal pools cuts every class to the smallest: refused too
    with pytest.raises(OTReweightError, match="more imbalanced than the profile"):
        make_long_tailed(np.repeat(np.arange(2), [30, 25]), 1, n_meta_per_class=2, n_val_per_class=2)
    # a pool less imbalanced than the requested factor is long-tailed as asked
    assert make_long_tailed(y, 200, n_max=300, n_meta_per_class=1, n_val_per_class=1).train_counts.tolist() == [300, 21, 1]
    # a balanced pool (the standard protocol) needs nothing
    assert make_long_tailed(np.repeat(np.arange(3), 50), 10, n_meta_per_class=2, n_val_per_class=2).train_counts[0] == 46
