"""The solved OT weight objectives (issue 7): kl_regularized and class_conditional, batch and dataset scope."""

import math

import numpy as np
import pytest
import torch

from otreweight import OTReweighter, OTReweightError, build_targets
from otreweight.targets import MetaTargets
from otreweight.engine import FitConfig, fit
from otreweight.methods import create_method
from otreweight.models import create_model
from otreweight.transport import entropic_ot, semi_relaxed_ot

SOLVED = [
    ("kl_regularized", "uniform"),
    ("kl_regularized", "class_balanced"),
    ("class_conditional", "class_balanced"),
]


def _toy(n_per_class=(30, 12, 4), d=5, seed=0, whole=False):
    """An imbalanced toy problem: class c clusters around a positive direction; balanced meta set."""
    g = torch.Generator().manual_seed(seed)
    k = len(n_per_class)
    centres = torch.rand(k, d, generator=g) + torch.eye(k, d) * 2
    labels = torch.arange(k).repeat_interleave(torch.tensor(n_per_class))
    feats = (centres[labels] + 0.4 * torch.rand(len(labels), d, generator=g)).double()
    meta_y = torch.arange(k).repeat_interleave(5)
    meta_x = (centres[meta_y] + 0.4 * torch.rand(len(meta_y), d, generator=g)).double()
    targets = build_targets("whole" if whole else "prototype", meta_x, meta_y, k)
    return feats, labels, targets


def _values(objective, init, max_iters, **kw):
    # Scattered features and meta examples (cosine costs spread over [0, 2]): a problem the
    # solver needs many sweeps for.
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(3).repeat_interleave(torch.tensor([30, 12, 4]))
    feats = torch.randn(len(labels), 4, generator=g, dtype=torch.float64)
    meta_y = torch.arange(3).repeat_interleave(5)
    targets = build_targets("whole", torch.randn(15, 4, generator=g, dtype=torch.float64), meta_y, 3)
    out = []
    for k in max_iters:
        rw = OTReweighter(labels, objective=objective, init=init, scope="dataset", tol=0.0, max_iter=k,
                          label_scale="unit", **kw)
        rw.refresh(feats, targets)
        out.append(float(rw.last_ot_value))
    return np.array(out)


@pytest.mark.parametrize("objective,init", SOLVED)
@pytest.mark.parametrize("lam", [0.03, 1.0])
def test_objective_decreases_monotonically_under_the_solver(objective, init, lam):
    # The solver's k-th iterate (POT's semi-relaxed Sinkhorn stopped after k sweeps) for k = 1..40.
    vals = _values(objective, init, range(1, 41), lam=lam, eps=0.1)
    assert np.all(np.diff(vals) <= 1e-12), np.diff(vals).max()
    assert vals[0] - vals[-1] > 1e-6  # it does move
    converged = _values(objective, init, [2000], lam=lam, eps=0.1)[0]
    assert vals[-1] == pytest.approx(converged, abs=1e-6)


@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0, 10.0])
def test_kl_solution_is_the_minimiser(lam):
    # First-order optimality of F(a) = OT_eps(a, b) + lam KL(a || p) on the simplex: the gradient
    # (dual potential + lam (log(a/p) + 1)) is the same for every example.
    g = torch.Generator().manual_seed(1)
    cost = torch.rand(25, 4, generator=g, dtype=torch.float64)
    p = torch.rand(25, generator=g, dtype=torch.float64)
    p /= p.sum()
    res = semi_relaxed_ot(cost, p, eps=0.1, lam=lam, tol=1e-12, max_iter=20000)
    a = res.weights.clone().requires_grad_(True)
    ot_val = entropic_ot(cost, a, eps=0.1, tol=1e-12, max_iter=20000).value
    F = ot_val + lam * (a * torch.log(a / p)).sum()
    (grad,) = torch.autograd.grad(F, a)
    assert float(grad.max() - grad.min()) < 1e-8
    assert float(F.detach()) == pytest.approx(float(res.value), abs=1e-9)
    # any other point of the simplex is worse
    for _ in range(5):
        q = (a.detach() * torch.exp(0.3 * torch.randn(25, generator=g, dtype=torch.float64)))
        q /= q.sum()
        Fq = entropic_ot(cost, q, eps=0.1, tol=1e-12, max_iter=20000).value + lam * (q * torch.log(q / p)).sum()
        assert float(Fq) > float(F.detach())


def test_kl_limits_prior_and_reference_minimiser():
    g = torch.Generator().manual_seed(2)
    cost = torch.rand(20, 3, generator=g, dtype=torch.float64)
    p = torch.full((20,), 1 / 20, dtype=torch.float64)
    assert torch.equal(semi_relaxed_ot(cost, p, eps=0.1, lam=math.inf).weights, p)
    assert torch.allclose(semi_relaxed_ot(cost, p, eps=0.1, lam=1e6).weights, p, atol=1e-6)
    # lam -> 0: each target spreads its mass by a softmax of -C / eps (the reference objective's minimiser)
    a0 = (torch.softmax(-cost / 0.1, dim=0) / 3).sum(1)
    assert torch.allclose(semi_relaxed_ot(cost, p, eps=0.1, lam=1e-7, tol=1e-12).weights, a0, atol=1e-6)


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("scope", ["dataset", "batch"])
def test_class_conditional_down_weights_a_far_off_mislabelled_example(whole, scope):
    # Two classes: 9 examples of class 0 near e1, 3 of class 1 near e2, and one example labelled 0
    # that lies among class 1 (far from every class-0 meta example).
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    noise = lambda n: 0.1 * torch.rand(n, 3, generator=g)  # noqa: E731
    feats = torch.cat([e1 + noise(9), e2 + noise(3), e2 + noise(1)])
    labels = torch.tensor([0] * 9 + [1] * 3 + [0])
    meta_x = torch.cat([e1 + noise(5), e2 + noise(5)])
    meta_y = torch.tensor([0] * 5 + [1] * 5)
    targets = build_targets("whole" if whole else "prototype", meta_x, meta_y, 2)
    rw = OTReweighter(labels, objective="class_conditional", scope=scope, init="uniform")
    if scope == "dataset":
        rw.refresh(feats, targets)
        w = rw.scores
    else:
        w = rw.step(torch.arange(13), feats, labels, targets)
    clean = w[:9]
    assert float(w[12]) < 0.2 * float(clean.mean())  # the outlier is down-weighted...
    assert float(clean.max() / clean.min()) < 1.5  # ...its well-placed classmates are not
    # exact class balance: each class carries half the mass
    assert float(w[labels == 0].sum()) == pytest.approx(float(w[labels == 1].sum()), rel=1e-6)
    assert float(w.sum()) == pytest.approx(13.0, rel=1e-6)  # the total of the (uniform) start


@pytest.mark.parametrize("objective,init", SOLVED)
@pytest.mark.parametrize("label_scale", ["reference", "unit"])
def test_no_nan_or_zero_mass_over_eps_and_lambda(objective, init, label_scale):
    feats, labels, targets = _toy(n_per_class=(60, 25, 10, 4, 1), d=8, seed=3)
    batch = torch.arange(0, 100, 7)  # a batch that misses classes
    for eps in (0.01, 0.03, 0.1, 0.3, 1.0):
        for lam in (1e-3, 0.01, 0.1, 1.0, 10.0, math.inf):
            for scope in ("dataset", "batch"):
                rw = OTReweighter(labels, objective=objective, init=init, eps=eps, lam=lam, scope=scope,
                                  label_scale=label_scale)
                if scope == "dataset":
                    rw.refresh(feats, targets)
                    w, start = rw.scores, rw.start
                else:
                    w = rw.step(batch, feats[batch], labels[batch], targets)
                    start = rw.start[batch]
                where = f"{objective} init={init} eps={eps} lam={lam} {scope}"
                assert bool(torch.isfinite(w).all()), where
                assert float((w / start).min()) > 1e-12, where  # no example loses all its mass
                assert float(w.sum()) == pytest.approx(float(start.sum()), rel=1e-6), where
                assert math.isfinite(float(rw.last_ot_value)), where


def test_lam_inf_is_the_start_and_options_are_checked():
    feats, labels, targets = _toy()
    rw = OTReweighter(labels, objective="kl_regularized", scope="dataset", lam="inf")
    rw.refresh(feats, targets)
    assert torch.allclose(rw.scores, rw.initial_scores())  # kl with lam = inf is class-balanced weighting
    with pytest.raises(OTReweightError, match="needs a solved objective"):
        OTReweighter(labels, scope="dataset")
    with pytest.raises(OTReweightError, match="lam"):
        OTReweighter(labels, objective="kl_regularized", lam=0)
    with pytest.raises(OTReweightError, match="refresh solves on the whole"):
        OTReweighter(labels, objective="kl_regularized").refresh(feats, targets)
    with pytest.raises(OTReweightError, match="eps=1e-05 is too small"):
        semi_relaxed_ot(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), torch.full((3,), 1 / 3), eps=1e-5)
    # the reference objective is unchanged by the new options' defaults
    ref = OTReweighter(labels)
    assert ref.objective == "reference" and ref.scope == "batch" and not ref.solved


@pytest.mark.parametrize("trainable", ["classifier", "all"])
def test_dataset_scope_trains_through_the_loop(trainable):
    # The loop hands the method the training features (TrainInfo.train_features) once per epoch.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [40, 12, 4])
    x = (rng.normal(size=(56, 6)) + 2 * np.eye(3, 6)[y]).astype(np.float32)
    ym = np.repeat([0, 1, 2], 4)
    xm = (rng.normal(size=(12, 6)) + 2 * np.eye(3, 6)[ym]).astype(np.float32)
    model = create_model("mlp", in_features=6, num_classes=3, hidden=(16,))
    method = create_method("ot", objective="class_conditional", scope="dataset", lam=0.1, meta_ce=0.0,
                           weighting="normalized")
    cfg = FitConfig(epochs=2, batch_size=16, lr=0.05, trainable=trainable, progress=False)
    res = fit(model, method, (x, y), (xm, ym), (xm, ym), cfg, device="cpu")
    assert len(res.history) == 2 and math.isfinite(res.history[-1]["train_loss"])
    w = method.reweighter.weights().numpy()
    start = method.reweighter.initial_scores().numpy()
    assert not np.allclose(w, start)  # the solve moved the weights...
    shares = np.bincount(y, w) / w.sum()
    assert np.allclose(shares, 1 / 3)  # ...keeping the classes exactly balanced


@pytest.mark.parametrize("objective", ["class_conditional", "kl_regularized"])
def test_unbalanced_meta_set_does_not_set_the_class_masses(objective):
    """whole targets with 10 / 10 / 1 meta examples: class masses do not follow the meta counts."""
    rng = np.random.default_rng(3)
    y = torch.tensor(np.repeat([0, 1, 2], [30, 10, 3]))
    feats = torch.from_numpy(rng.normal(size=(43, 4)) + 2 * np.eye(3, 4)[y.numpy()])
    ty = torch.tensor(np.repeat([0, 1, 2], [10, 10, 1]))
    tf = torch.from_numpy(rng.normal(size=(21, 4)) + 2 * np.eye(3, 4)[ty.numpy()])
    rw = OTReweighter(y, 3, init="class_balanced", objective=objective, scope="dataset", lam=1.0, label_scale="unit")
    rw.refresh(feats, MetaTargets(tf, ty, 3))
    w = rw.weights().double()
    share = torch.bincount(y, weights=w) / w.sum()
    if objective == "class_conditional":
        assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-6)
    else:
        assert share.min() > 0.25  # the 1-example class is not cut to its 1/21 share of the targets
