"""The authors' OT step as an option: <pi, C> differentiated through POT's Sinkhorn, weight decay on the scores.

No numbers recorded from the authors' published code are available here, so these tests check the
option against its definition (finite differences of a -> <pi*(a), C>) instead.
"""
import numpy as np
import pytest
import torch

from otreweight import OTReweightError
from otreweight.reweighter import OTReweighter
from otreweight.targets import MetaTargets
from otreweight.transport import entropic_ot, entropic_ot_linear_unrolled


def problem(n=12, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, m, generator=g, dtype=torch.float64)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    return cost, s


def linear_value(cost, s):
    return float(entropic_ot(cost, torch.softmax(s, 0), eps=0.1, tol=1e-13, max_iter=100000, method="log").value_linear)


def test_unrolled_gradient_is_the_derivative_of_the_linear_cost():
    cost, s = problem()
    s = s.requires_grad_(True)
    value = entropic_ot_linear_unrolled(cost, torch.softmax(s, 0), eps=0.1, tol=1e-12, max_iter=5000)
    (g,) = torch.autograd.grad(value, s)
    h = 1e-6
    fd = torch.tensor([(linear_value(cost, s.detach() + h * e) - linear_value(cost, s.detach() - h * e)) / (2 * h)
                       for e in torch.eye(s.shape[0], dtype=torch.float64)])
    np.testing.assert_allclose(g.numpy(), fd.numpy(), atol=1e-6)
    # it is not the envelope gradient of the entropic value (the cause of the size gap measured in issue 16)
    s2 = s.detach().requires_grad_(True)
    (ge,) = torch.autograd.grad(entropic_ot(cost, torch.softmax(s2, 0), eps=0.1, tol=1e-12, max_iter=5000).value, s2)
    assert not torch.allclose(g, ge, atol=1e-4)


def test_reweighter_gradient_option_and_score_decay():
    cost_f = torch.randn(8, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    targets = MetaTargets(torch.randn(3, 5, dtype=torch.float64), torch.arange(3), 3)
    idx = torch.arange(8)
    base = dict(init="class_balanced", lr=0.01, eps=0.1, tol=1e-10, max_iter=5000)
    env = OTReweighter(labels, 3, **base)
    unr = OTReweighter(labels, 3, gradient="unrolled", **base)
    dec = OTReweighter(labels, 3, gradient="unrolled", score_decay=5e-4, **base)
    s0 = env.scores.clone().double()
    for rw in (env, unr, dec):
        rw.step(idx, cost_f, labels, targets)
    g_unr = (s0 - unr.scores.double()) / 0.01
    # the decay adds lr * decay * s to the step, exactly
    np.testing.assert_allclose((s0 - dec.scores.double()).numpy(), (0.01 * (g_unr + 5e-4 * s0)).numpy(), atol=1e-7)
    assert not torch.allclose(env.scores, unr.scores)
    with pytest.raises(OTReweightError, match="gradient"):
        OTReweighter(labels, 3, gradient="autograd")
    with pytest.raises(OTReweightError, match="score_decay"):
        OTReweighter(labels, 3, score_decay=-1.0)


def test_named_variant_in_compare():
    from otreweight.methods.ot_reweight import OT_VARIANTS

    assert OT_VARIANTS["ot-authors-grad"] == {"gradient": "unrolled", "score_decay": 5e-4}


def test_authors_gradient_variant_plans_in_compare():
    from otreweight.compare import plan_comparison
    from otreweight.config import load_config

    cfg = load_config("configs/cifar10_lt_if100.yaml")
    plan = {v["name"]: v for v in plan_comparison(cfg, ["ot", "ot-authors-grad"])}
    assert plan["ot-authors-grad"]["options"] == {**plan["ot"]["options"], "gradient": "unrolled", "score_decay": 5e-4}
