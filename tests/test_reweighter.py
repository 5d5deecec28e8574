import numpy as np
import pytest
import torch

from otreweight import (
    OTReweighter,
    OTReweightError,
    build_targets,
    combined_cost,
    effective_number_weights,
    feature_cost,
    label_cost,
)


def _targets(k=2, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    meta_x = torch.randn(5 * k, d, generator=g)
    meta_y = torch.arange(k).repeat_interleave(5)
    return build_targets("prototype", meta_x, meta_y, k), meta_x, meta_y


def test_costs_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    fc = feature_cost(f, g)
    s = float(1 / np.sqrt(2))
    assert torch.allclose(fc, torch.tensor([[0.0, 1 - s], [1.0, 1 - s]]), atol=1e-6)
    y, yt = torch.tensor([0, 1]), torch.tensor([0, 0])
    assert torch.allclose(label_cost(y, yt, 10), torch.tensor([[0.0, 0.0], [0.2, 0.2]]))
    assert torch.allclose(label_cost(y, yt, 10, "unit"), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    comb = combined_cost(f, y, g, yt, 10, alpha=0.5)
    assert torch.allclose(comb, 0.5 * fc + 0.5 * label_cost(y, yt, 10), atol=1e-6)


def test_targets_prototype_and_whole():
    tg, meta_x, meta_y = _targets()
    assert tg.features.shape == (2, 3)
    assert torch.allclose(tg.features[1], meta_x[5:].mean(0))
    assert tg.labels.tolist() == [0, 1]
    whole = build_targets("whole", meta_x, meta_y, 2)
    assert len(whole) == 10


def test_meta_set_missing_a_class():
    with pytest.raises(OTReweightError, match="no example of class"):
        build_targets("prototype", torch.randn(4, 3), torch.tensor([0, 0, 2, 2]), 3)


def test_class_balanced_init_is_the_effective_number():
    labels = np.array([0] * 50 + [1] * 5)
    beta = 0.99
    w = np.array([(1 - beta) / (1 - beta**50), (1 - beta) / (1 - beta**5)])
    w = w / w.sum() * 2
    assert np.allclose(effective_number_weights([50, 5], beta).numpy(), w, rtol=1e-5)
    rw = OTReweighter(labels, init="class_balanced", beta=beta)
    assert np.allclose(rw.scores[:50].numpy(), w[0], rtol=1e-5)
    assert np.allclose(rw.scores[50:].numpy(), w[1], rtol=1e-5)
    assert torch.all(OTReweighter(labels, init="uniform").scores == 1)


@pytest.mark.parametrize("cost", ["label", "combined"])
def test_one_step_moves_mass_to_the_rarer_class(cost):
    tg, _, _ = _targets()
    labels = torch.tensor([0] * 8 + [1] * 2)
    feats = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    rw = OTReweighter(labels, init="uniform", cost=cost, lr=1.0, weighting="normalized")
    idx = torch.arange(10)
    before = torch.softmax(rw.scores[idx], 0)[8:].sum()
    rw.step(idx, feats, labels, tg)
    after = torch.softmax(rw.scores[idx], 0)[8:].sum()
    assert before == pytest.approx(0.2)
    assert after > before + 1e-3


def test_balanced_batch_at_the_targets_stays_uniform():
    tg, _, _ = _targets(k=3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    feats = tg.features[labels]  # every example sits on its class prototype
    # a stationary point of the converged entropic value (the envelope variant, no decay on the
    # scores); ot's default, the authors' truncated step, is not stationary there
    rw = OTReweighter(labels, init="uniform", cost="combined", lr=1.0, steps=5, gradient="envelope", stop="tol",
                      score_decay=0.0)
    w = rw.step(torch.arange(6), feats, labels, tg)
    assert torch.allclose(rw.scores, torch.ones(6), atol=1e-6)
    assert torch.allclose(w, torch.ones(6), atol=1e-6)


def test_buffer_is_indexed_by_example_id_across_shuffled_batches():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0, 1, 0])
    feats_all = torch.randn(10, 3, generator=g)
    tg, _, _ = _targets()
    batch = torch.tensor([7, 1, 4, 2])
    shuffled = batch[torch.tensor([2, 0, 3, 1])]

    a = OTReweighter(labels, init="class_balanced", lr=0.5)
    b = OTReweighter(labels, init="class_balanced", lr=0.5)
    a.step(batch, feats_all[batch], labels[batch], tg)
    wb = b.step(shuffled, feats_all[shuffled], labels[shuffled], tg)
    start = a.initial_scores()
    assert torch.allclose(a.scores, b.scores, atol=1e-6)  # same id -> same new score, whatever the order
    others = torch.tensor([i for i in range(10) if i not in batch.tolist()])
    assert torch.equal(a.scores[others], start[others])
    assert not torch.allclose(a.scores[batch], start[batch])
    assert torch.allclose(wb, b.scores[shuffled])  # raw weights are the stored scores, in batch order

    # the buffer persists: a later batch starts from what was written, and state_dict round-trips
    c = OTReweighter(labels, init="class_balanced", lr=0.5)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.scores, a.scores)
    a.step(batch, feats_all[batch], labels[batch], tg)
    assert not torch.allclose(a.scores, c.scores)


def test_weights_access_and_summary():
    labels = np.array([0] * 6 + [1] * 2)
    rw = OTReweighter(labels, init="class_balanced")
    assert rw.weights().shape == (8,)
    norm = rw.weights(normalize=True)
    assert norm.mean() == pytest.approx(1.0, rel=1e-5)
    summary = rw.class_summary()
    assert summary["count"].tolist() == [6, 2]
    assert summary["mean"][1] > summary["mean"][0]


def test_normalized_weights_average_one():
    labels = torch.tensor([0, 0, 0, 1])
    tg, _, _ = _targets()
    rw = OTReweighter(labels, weighting="normalized")
    w = rw.step(torch.arange(4), torch.randn(4, 3), labels, tg)
    assert w.mean() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0}, "eps"),
        ({"eps": -1}, "eps"),
        ({"cost": "wasserstein"}, "unknown cost"),
        ({"init": "random"}, "unknown initialisation"),
        ({"weighting": "soft"}, "unknown weighting"),
        ({"label_scale": "big"}, "unknown label scale"),
        ({"steps": -1}, "steps"),
        ({"alpha": 2.0}, "alpha"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(OTReweightError, match=match):
        OTReweighter([0, 1, 1], **kwargs)


def test_bad_batches():
    labels = torch.tensor([0, 1, 0, 1])
    tg, _, _ = _targets()
    rw = OTReweighter(labels)
    with pytest.raises(OTReweightError, match="empty batch"):
        rw.step(torch.tensor([], dtype=torch.long), torch.zeros(0, 3), torch.tensor([], dtype=torch.long), tg)
    feats = torch.randn(2, 3)
    feats[0, 1] = float("nan")
    with pytest.raises(OTReweightError, match="NaN or inf"):
        rw.step(torch.tensor([0, 1]), feats, labels[:2], tg)
    with pytest.raises(OTReweightError, match="lie in 0..1"):
        OTReweighter([0, 1, 2], num_classes=2)
    with pytest.raises(OTReweightError, match="feature sizes differ"):
        rw.step(torch.tensor([0, 1]), torch.randn(2, 5), labels[:2], tg)


def test_solver_choice_gives_the_same_update():
    """The scaling (CPU default) and log-domain Sinkhorn forms move the scores identically."""
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(64) % 4
    feats = torch.randn(64, 8, generator=g).abs()
    targets = build_targets("whole", torch.randn(20, 8, generator=g).abs(), torch.arange(4).repeat_interleave(5), 4)
    out = {}
    for solver in ("log", "scaling", "auto"):
        rw = OTReweighter(labels.numpy(), solver=solver, steps=3, lr=1.0, tol=1e-10)
        out[solver] = rw.step(torch.arange(64), feats, labels, targets)
    assert not torch.allclose(out["log"], OTReweighter(labels.numpy()).scores)
    assert torch.allclose(out["log"], out["scaling"], rtol=0, atol=1e-6)
    assert torch.equal(out["auto"], out["scaling"])
