import pytest
import torch

from otreweight import OTReweightError, entropic_ot


def _problem(n=12, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, m, generator=g, dtype=torch.float64)
    a = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    return cost, a


@pytest.mark.parametrize("method", ["log", "scaling"])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5])
def test_envelope_gradient_matches_finite_differences(eps, method):
    cost, a = _problem()
    a = a.clone().requires_grad_(True)
    res = entropic_ot(cost, a, eps=eps, tol=1e-12, max_iter=100_000, method=method)
    (grad,) = torch.autograd.grad(res.value, a)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        d = torch.randn(a.shape[0], generator=g, dtype=torch.float64)
        d -= d.mean()  # stay on the simplex
        h = 1e-6
        plus = entropic_ot(cost, a.detach() + h * d, eps=eps, tol=1e-12, max_iter=100_000, method=method).value
        minus = entropic_ot(cost, a.detach() - h * d, eps=eps, tol=1e-12, max_iter=100_000, method=method).value
        fd = (plus - minus) / (2 * h)
        assert torch.allclose(fd, (grad * d).sum(), rtol=1e-4, atol=1e-7)


def test_plan_has_the_marginals_and_values_are_consistent():
    cost, a = _problem()
    res = entropic_ot(cost, a, eps=0.1, tol=1e-10, max_iter=10_000)
    assert torch.allclose(res.plan.sum(1), a, atol=1e-8)
    assert torch.allclose(res.plan.sum(0), torch.full((4,), 0.25, dtype=torch.float64), atol=1e-8)
    assert torch.isclose(res.value_linear, (res.plan * cost).sum(), atol=1e-10)


def test_default_tolerance_gives_the_converged_value():
    cost, a = _problem(128, 10)
    loose = entropic_ot(cost, a, eps=0.1).value
    tight = entropic_ot(cost, a, eps=0.1, tol=1e-12, max_iter=100_000).value
    assert torch.isclose(loose, tight, atol=1e-6)


@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf")])
def test_bad_eps(eps):
    cost, a = _problem()
    with pytest.raises(OTReweightError, match="eps"):
        entropic_ot(cost, a, eps=eps)


def test_empty_problem():
    with pytest.raises(OTReweightError, match="empty"):
        entropic_ot(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))


def test_scaling_and_log_domain_agree():
    """POT's Sinkhorn-Knopp path (the CPU default when safe) and ot.solve's log-domain one give
    the same value, plan and envelope gradient."""
    cost, a = _problem(64, 9)
    out = {}
    for method in ("log", "scaling"):
        x = a.clone().requires_grad_(True)
        res = entropic_ot(cost, x, eps=0.1, tol=1e-10, max_iter=10_000, method=method)
        (grad,) = torch.autograd.grad(res.value, x)
        out[method] = (res.value.detach(), res.value_linear, res.plan, grad)
    for left, right in zip(out["log"], out["scaling"]):
        assert torch.allclose(left, right, atol=1e-8)


def test_auto_falls_back_to_log_domain_when_exp_would_underflow():
    # max(C)/eps = 1000: e^{-C/eps} underflows in float64, the scaling form cannot run.
    cost, a = _problem()
    cost[0, 0] = 1.0
    res = entropic_ot(cost, a, eps=0.001, tol=1e-9, max_iter=100_000)
    assert torch.isfinite(res.value)
    assert torch.allclose(res.plan.sum(1), a, atol=1e-6)
    with pytest.raises(OTReweightError, match="max\\|cost\\|/eps"):
        entropic_ot(cost, a, eps=0.001, method="scaling")


def test_bad_method():
    cost, a = _problem()
    with pytest.raises(OTReweightError, match="method must be"):
        entropic_ot(cost, a, method="exact")
