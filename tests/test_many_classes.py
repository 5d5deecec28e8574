"""OT re-weighting and reports at thousands of classes (ImageNet-LT, iNaturalist 2018 sizes)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from otreweight import OTReweighter, build_targets
from otreweight import transport
from otreweight._errors import OTReweightError
from otreweight.cost import cost_matrix
from otreweight.report import _Classes, _group_confusion, write_report
from otreweight.targets import MetaTargets
from otreweight.transport import class_conditional_blocks, class_conditional_ot, entropic_ot

from test_report import PNG_SIGNATURE, make_run


def _problem(seed=0, k=7, d=6, per_class=(1, 3), dtype=torch.float64):
    """Features and labels of a long-tailed training set and targets with 1 or 3 per class."""
    g = torch.Generator().manual_seed(seed)
    counts = [max(2, int(40 * 0.8 ** c)) for c in range(k)]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    feats = torch.randn(labels.numel(), d, generator=g, dtype=dtype) + labels[:, None].to(dtype) * 0.3
    tl = torch.cat([torch.full((per_class[c % len(per_class)],), c) for c in range(k)])
    tf = torch.randn(tl.numel(), d, generator=g, dtype=dtype) + tl[:, None].to(dtype) * 0.3
    return feats, labels, tf, tl, k


def _callbacks(feats, labels, tf, tl, k, calls):
    full = cost_matrix("combined", feats, labels, tf, tl, k)

    def block(rows, cols):
        calls.append(rows.numel() * cols.numel())
        return full[rows][:, cols]

    def pair(rows, cols):
        return full[rows, cols]

    return full, block, pair


@pytest.mark.parametrize("lam", [0.1, 1.0, math.inf])
@pytest.mark.parametrize("per_class", [(1,), (3,), (1, 3, 2)])
def test_class_blocks_equal_the_masked_solve_on_the_whole_matrix(lam, per_class):
    feats, labels, tf, tl, k = _problem(per_class=per_class)
    calls = []
    full, block, pair = _callbacks(feats, labels, tf, tl, k, calls)
    ref = class_conditional_ot(full, labels, tl, k, eps=0.1, lam=lam, tol=1e-12, max_iter=20000)
    res = class_conditional_blocks(block, pair, labels, tl, k, eps=0.1, lam=lam, tol=1e-12, max_iter=20000,
                                   max_entries=60)
    assert torch.allclose(res.weights, ref.weights, atol=1e-6, rtol=0)
    assert abs(float(res.value) - float(ref.value)) < 1e-6
    assert abs(float(res.weights.sum()) - 1.0) < 1e-9
    multi = sum(1 for c in range(k) if per_class[c % len(per_class)] > 1)
    if multi:
        assert res.n_blocks > 1 and len(calls) == res.n_blocks  # split into several class blocks
        # memory bounded: no block above max_entries unless a single class alone is larger
        biggest_class = max(int((labels == c).sum()) * per_class[c % len(per_class)] for c in range(k))
        assert max(calls) <= max(60, biggest_class)
    else:
        assert calls == []  # one target per class: the explicit minimiser, no block at all


def test_class_blocks_one_line_errors():
    feats, labels, tf, tl, k = _problem()
    _, block, pair = _callbacks(feats, labels, tf, tl, k, [])
    keep = tl != 2
    with pytest.raises(OTReweightError, match=r"class\(es\) \[2\] have examples but no target") as info:
        class_conditional_blocks(block, pair, labels, tl[keep], k)
    assert "\n" not in str(info.value)
    with pytest.raises(OTReweightError, match="lam"):
        class_conditional_blocks(block, pair, labels, tl, k, lam=0.0)


@pytest.mark.parametrize("kind", ["prototype", "whole"])
def test_dataset_refresh_class_conditional_matches_the_full_solve(kind, monkeypatch):
    feats, labels, tf, tl, k = _problem(per_class=(3,))
    targets = build_targets(kind, tf, tl, k)
    rw = OTReweighter(labels, k, objective="class_conditional", scope="dataset", lam=0.3, tol=1e-12,
                      max_iter=20000)
    monkeypatch.setattr(transport, "MAX_BLOCK_ENTRIES", 50)  # many small blocks
    rw.refresh(feats, targets)
    cost = cost_matrix("combined", feats, labels, targets.features, targets.labels, k)
    ref = class_conditional_ot(cost, labels, targets.labels, k, eps=0.1, lam=0.3, tol=1e-12, max_iter=20000)
    scale = rw.start.double().sum()
    assert torch.allclose(rw.scores.double(), (ref.weights * scale).to(rw.scores.dtype).double(), rtol=1e-5, atol=1e-7)


def test_dense_solves_refused_above_the_limit_in_one_line(monkeypatch):
    feats, labels, tf, tl, k = _problem(per_class=(3,))
    n = labels.numel()
    monkeypatch.setattr(transport, "MAX_COST_ENTRIES", n * k - 1)
    with pytest.raises(OTReweightError, match="objective='class_conditional'") as info:
        OTReweighter(labels, k, objective="kl_regularized", scope="dataset")  # before any work
    assert "\n" not in str(info.value) and "MAX_COST_ENTRIES" in str(info.value)
    # class_conditional is solved in class blocks: no limit
    rw = OTReweighter(labels, k, objective="class_conditional", scope="dataset")
    rw.refresh(feats, build_targets("whole", tf, tl, k))
    assert torch.isfinite(rw.scores).all()
    # the per-batch step against whole targets: refused with what to use instead; prototypes pass
    monkeypatch.setattr(transport, "MAX_COST_ENTRIES", 8 * (tl.numel() - 1))
    rw = OTReweighter(labels, k)
    idx = torch.arange(8)
    with pytest.raises(OTReweightError, match="targets='prototype'") as info:
        rw.step(idx, feats[idx], labels[idx], build_targets("whole", tf, tl, k))
    assert "\n" not in str(info.value)
    assert torch.isfinite(rw.step(idx, feats[idx], labels[idx], build_targets("prototype", tf, tl, k))).all()


def test_dataset_refresh_refuses_non_finite_features():
    feats, labels, tf, tl, k = _problem(per_class=(1,))
    rw = OTReweighter(labels, k, objective="class_conditional", scope="dataset")
    for bad in (math.nan, math.inf):
        f = feats.clone()
        f[5, 2] = bad
        with pytest.raises(OTReweightError, match="training features contains NaN or inf"):
            rw.refresh(f, build_targets("prototype", tf, tl, k))
    big = feats.to(torch.float16) * 1000  # sums of half features overflow float16: no false alarm
    rw.refresh(big, build_targets("prototype", tf.to(torch.float16), tl, k))
    assert torch.isfinite(rw.scores).all()


def test_float32_cost_against_cached_unit_targets_matches_float64():
    g = torch.Generator().manual_seed(1)
    k, d = 300, 64
    f = torch.randn(64, d, generator=g)
    y = torch.randint(0, k, (64,), generator=g)
    targets = MetaTargets(torch.randn(k, d, generator=g), torch.arange(k), k)
    for cost in ("combined", "feature", "label"):
        rw = OTReweighter(y, k, cost=cost)
        got = rw._cost(f, y, targets)
        ref = cost_matrix(cost, f.double(), y, targets.features.double(), targets.labels, k)
        assert got.dtype == torch.float64
        assert torch.allclose(got, ref, atol=1e-6, rtol=0), cost
    # the unit rows are computed once, and again when the features change in place
    u1 = targets.unit_features()
    assert targets.unit_features() is u1
    targets.features.mul_(2.0).add_(1.0)
    u2 = targets.unit_features()
    assert u2 is not u1
    assert torch.allclose(u2, torch.nn.functional.normalize(targets.features, dim=1))


@pytest.mark.parametrize("k", [1000, 8142])
def test_one_ot_step_at_thousands_of_prototypes(k):
    g = torch.Generator().manual_seed(k)
    d, n = 32, 256
    labels = torch.randint(0, k, (20 * k,), generator=g)
    meta = torch.randn(2 * k, d, generator=g)
    targets = build_targets("prototype", meta, torch.arange(k).repeat(2), k)
    rw = OTReweighter(labels, k)
    idx = torch.randperm(labels.numel(), generator=g)[:n]
    f = torch.randn(n, d, generator=g)
    before = rw.scores.clone()
    w = rw.step(idx, f, labels[idx], targets)
    # the same step computed directly in float64 (cost, softmax, envelope gradient)
    s = before[idx].double().requires_grad_(True)
    cost = cost_matrix("combined", f.double(), labels[idx], targets.features.double(), targets.labels, k)
    (grad,) = torch.autograd.grad(entropic_ot(cost, torch.softmax(s, 0), eps=0.1).value, s)
    expected = (s - 0.01 * grad).detach()
    assert torch.allclose(w.double(), expected, rtol=1e-5, atol=1e-9)
    assert float((w.double() - before[idx].double()).abs().max()) > 0  # the step moved the scores
    others = torch.ones(labels.numel(), dtype=torch.bool)
    others[idx] = False
    assert torch.equal(rw.scores[others], before[others])


def test_group_confusion_counts():
    k = 300
    split = {"train_counts": [500 - c for c in range(k)], "many_threshold": 400, "few_threshold": 250}
    cls = _Classes(split, k)
    rng = np.random.default_rng(0)
    yt = rng.integers(0, k, 5000)
    yp = np.where(rng.random(5000) < 0.5, yt, rng.integers(0, k, 5000))
    names, of, cm, acc = _group_confusion(cls, yt, yp)
    assert names == ["many", "medium", "few"]
    group = np.array(["many" if n > 400 else ("few" if n < 250 else "medium") for n in split["train_counts"]])
    for i, gi in enumerate(names):
        rows = group[yt] == gi
        for j, gj in enumerate(names):
            assert cm[i, j] == pytest.approx(np.mean(group[yp[rows]] == gj))
        recalls = [np.mean(yp[yt == c] == c) for c in np.flatnonzero(group == gi) if (yt == c).any()]
        assert acc[i] == pytest.approx(np.mean(recalls))
    # without shot groups: ten bins of the class order
    names, of, cm, acc = _group_confusion(_Classes(None, k), yt, yp)
    assert len(names) == 10 and np.allclose(cm.sum(1), 1.0) and (np.bincount(of) == 30).all()


MAX_FIGURE_BYTES = 300_000
MAX_REPORT_BYTES = 50_000


def test_report_at_1000_classes_stays_small(tmp_path):
    run = tmp_path / "run1000"
    make_run(run, 1000, {"stage1": False, "stage2_ot": True}, epochs=3, seed=2)
    md = write_report(run)
    text = md.read_text()
    assert len(text.encode()) < MAX_REPORT_BYTES, len(text.encode())
    listed = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert {p.split("/")[1] for p in listed} == {
        "stage1_per_class.png", "stage1_confusion.png", "stage2_ot_per_class.png", "stage2_ot_weights.png",
        "stage2_ot_confusion.png", "learning_curves.png"}
    for rel in listed:
        data = (run / rel).read_bytes()
        assert data[:8] == PNG_SIGNATURE and 1000 < len(data) < MAX_FIGURE_BYTES, (rel, len(data))
    assert "by class group (1000 classes: no 1000 x 1000 picture)" in text
    # per-class values go to CSV files beside the figures, the markdown lists the extremes only
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table_rows) < 60
    for name in ("stage1_per_class.csv", "stage2_ot_per_class.csv", "stage2_ot_weights.csv"):
        assert f"figures/{name}" in text
        lines = (run / "figures" / name).read_text().splitlines()
        assert len(lines) == 1001, name
    weights_csv = (run / "figures" / "stage2_ot_weights.csv").read_text().splitlines()
    assert weights_csv[0].startswith("class,name,examples,start,class_balanced,mean")


def test_vectorised_per_class_statistics_match_a_loop_over_classes():
    from otreweight.report import _weight_stats

    rng = np.random.default_rng(3)
    k = 50
    labels = rng.integers(0, k - 1, 2000)  # class k - 1 has no example
    rw = OTReweighter(labels, k)
    rw.scores.mul_(torch.as_tensor(rng.uniform(0.5, 1.5, labels.size), dtype=rw.scores.dtype))
    summ = rw.class_summary()
    w, start = rw.weights().numpy().astype(float), rw.initial_scores().numpy().astype(float)
    initial = start
    stats = _weight_stats({"labels": labels, "scores": w, "initial": initial}, k)
    for c in range(k):
        m = labels == c
        if not m.any():
            for name in ("mean", "std", "min", "max", "start"):
                assert np.isnan(summ[name][c]) and np.isnan(stats[name][c])
            assert summ["count"][c] == 0 and np.isnan(stats["rel"][c])
            continue
        expected = {"mean": w[m].mean(), "std": w[m].std(), "min": w[m].min(), "max": w[m].max(),
                    "start": start[m].mean()}
        for name, v in expected.items():
            assert summ[name][c] == pytest.approx(v, rel=1e-9, abs=1e-12), (name, c)
            assert stats[name][c] == pytest.approx(v, rel=1e-9, abs=1e-12), (name, c)
        assert stats["rel"][c] == pytest.approx(((w[m] - initial[m]) / np.abs(initial[m])).mean(), rel=1e-9, abs=1e-12)
        assert summ["count"][c] == stats["count"][c] == m.sum()


def test_a_stage_two_solve_above_the_limit_stops_the_run_before_stage_one(tmp_path, monkeypatch):
    """The dense-solve limit is checked from the split's sizes when the run starts, not after stage 1."""
    from otreweight import OTReweightError, transport
    from otreweight.experiment import load_config, run_experiment

    rng = np.random.default_rng(0)
    path = tmp_path / "v.npz"
    np.savez(path, x_train=rng.normal(size=(150, 4)), y_train=np.arange(150) % 3, x_test=rng.normal(size=(9, 4)),
             y_test=np.arange(9) % 3)
    monkeypatch.setattr(transport, "MAX_COST_ENTRIES", 100)
    stage2 = ('stage2=[{"name": "kl", "method": "ot", "options": {"objective": "kl_regularized", '
              '"scope": "dataset"}}]')
    cfg = load_config("configs/cifar10_lt_if100.yaml", [f"data.source={path}", "model.name=mlp", "data.imbalance_factor=2",
                                                        "data.n_val_per_class=5", "data.n_meta_per_class=5", stage2,
                                                        f"output_dir={tmp_path / 'r'}", "progress=false"])
    with pytest.raises(OTReweightError, match="objective='kl_regularized' with scope='dataset' on"):
        run_experiment(cfg, log=lambda *a: None)
    assert not (tmp_path / "r" / "stage1").exists()  # nothing trained


def test_sklearn_dense_objectives_are_refused_above_the_limit(monkeypatch):
    from otreweight.sklearn import OTSampleWeighter

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 5)), np.arange(120) % 3
    monkeypatch.setattr(transport, "MAX_COST_ENTRIES", 50)
    for objective in ("kl_regularized", "descent"):
        with pytest.raises(OTReweightError, match=rf"objective='{objective}' on \d+ examples .* use objective='class_conditional'"):
            OTSampleWeighter(objective=objective, random_state=0).fit(X, y)
    OTSampleWeighter(objective="class_conditional", random_state=0).fit(X, y)  # solved class by class: no limit
