r"""Entropic optimal transport between weighted examples and meta targets, through POT.

For a cost matrix :math:`C \in \mathbb{R}^{n\times m}`, source weights :math:`a` on the
simplex (one per training example) and target weights :math:`b` (uniform :math:`1/m` by default),

.. math::

    \mathrm{OT}_\varepsilon(a, b) = \min_{\pi \in U(a, b)} \langle \pi, C\rangle
        + \varepsilon \sum_{ij} \pi_{ij} (\log \pi_{ij} - 1),
    \qquad U(a,b) = \{\pi \ge 0 : \pi 1 = a,\ \pi^\top 1 = b\}.

It is solved by Sinkhorn in POT: log-domain by :func:`ot.solve` with ``reg_type="entropy"``, or,
on the CPU when :math:`\max |C|/\varepsilon` is small enough for :math:`e^{-C/\varepsilon}` to be
safe in floating point, by POT's scaling form (:func:`ot.bregman.sinkhorn_knopp`), which
exponentiates the cost once instead of every iteration and makes a weight update 2-5x faster
there (same plan, same potentials; see ``method`` in :func:`entropic_ot`).
By the envelope theorem the gradient with respect to :math:`a` is the optimal dual potential
:math:`f` (defined up to a constant, which POT centres); POT's ``grad="envelope"`` attaches
exactly that gradient, so no Sinkhorn iteration is back-propagated. (With POT's default
``reg_type="KL"``, i.e. :math:`\varepsilon\,\mathrm{KL}(\pi \| a b^\top)`, the regulariser itself
depends on :math:`a` and the potential is *not* the gradient of the value; we therefore use the
entropy form, whose optimal plan is the same.) The value POT reports, and :func:`entropic_ot`
returns, is :math:`\langle\pi, C\rangle + \varepsilon\sum\pi\log\pi`: for plans of unit mass
it exceeds the formula above by the constant :math:`\varepsilon`, which changes no minimiser
and no gradient.

:func:`semi_relaxed_ot` solves the regularised weight problem
:math:`\min_a \mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\|p)` to convergence (the
``kl_regularized`` and ``class_conditional`` objectives of :class:`~otreweight.OTReweighter`).
:func:`authors_sinkhorn` (written in ``_authors_sinkhorn.py``, exported here) is the reference
code's truncated Sinkhorn, the step of the ``ot`` method.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import ot
import torch
from sklearn.exceptions import ConvergenceWarning

from ._authors_sinkhorn import AuthorsSinkhornResult, authors_sinkhorn  # noqa: F401 - part of the core's API
from ._errors import OTReweightError, check_positive


@dataclass
class OTResult:
    """Result of :func:`entropic_ot`.

    Attributes
    ----------
    value : torch.Tensor
        The entropic objective :math:`\\mathrm{OT}_\\varepsilon(a, b)` (scalar). Differentiable
        with respect to ``a`` when ``a.requires_grad``.
    value_linear : torch.Tensor
        :math:`\\langle \\pi^*, C\\rangle` without the entropy term (what the authors' code reports).
    plan : torch.Tensor
        The optimal plan :math:`\\pi^*`, shape ``(n, m)``.
    """

    value: torch.Tensor
    value_linear: torch.Tensor
    plan: torch.Tensor


def entropic_ot(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    tol: float = 1e-6,
    max_iter: int = 1000,
    method: str = "auto",
) -> OTResult:
    r"""Entropic OT value between ``a`` (source weights) and ``b`` (target weights, default uniform).

    Parameters
    ----------
    cost : torch.Tensor
        Cost matrix ``(n, m)``; not differentiated.
    a : torch.Tensor
        Source weights ``(n,)``, non-negative, summing to 1. If ``a.requires_grad``, the returned
        value back-propagates the envelope gradient (the dual potential) into ``a``.
    b : torch.Tensor, optional
        Target weights ``(m,)``; uniform :math:`1/m` when omitted.
    eps : float
        Entropic regularisation :math:`\varepsilon > 0` (0.1 in the paper).
    tol, max_iter : float, int
        Sinkhorn stopping rule. POT's default for ``ot.solve`` is 1,000 iterations with no early
        stop; ``tol=1e-6`` reaches the same value and gradient in a few dozen.
    method : {"auto", "log", "scaling"}
        ``"log"``: log-domain Sinkhorn through :func:`ot.solve` (``grad="envelope"``), stable for
        any cost and :math:`\varepsilon`. ``"scaling"``: POT's Sinkhorn-Knopp iterations on
        :math:`K = e^{-C/\varepsilon}` (one exponential, then matrix-vector products); the value
        :math:`\langle\pi, C\rangle + \varepsilon\sum\pi\log\pi` and the envelope gradient
        :math:`f = \varepsilon \log u` (centred) are attached with POT's ``set_gradients``
        exactly as ``ot.solve`` does. It needs :math:`\max |C|/\varepsilon \le` 50, so
        that no entry of :math:`K` underflows or overflows. ``"auto"`` (default) takes ``"scaling"`` for CPU
        tensors when that holds and ``"log"`` otherwise (on an accelerator the check would cost
        a host sync per call, and the log-domain iterations are cheap there).

    Returns
    -------
    OTResult
    """
    eps = check_positive("eps (entropic regularisation)", eps)
    if cost.ndim != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise OTReweightError(
            f"the cost matrix must be 2-d and non-empty, got shape {tuple(cost.shape)}; "
            "is the batch or the meta set empty?"
        )
    if a.shape[0] != cost.shape[0]:
        raise OTReweightError(f"a has {a.shape[0]} weights but the cost matrix has {cost.shape[0]} rows")
    if method not in ("auto", "log", "scaling"):
        raise OTReweightError(f"method must be 'auto', 'log' or 'scaling', got {method!r}")
    if b is None:
        b = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=a.dtype, device=a.device)
    for name, w in (("a", a), ("b", b)):
        total = float(w.detach().sum())
        if abs(total - 1.0) > 1e-5 or bool((w.detach() < 0).any()):
            raise OTReweightError(f"{name} must be non-negative weights summing to 1, got a sum of {total:.6g}; "
                                  f"normalise it ({name} / {name}.sum())")
    result = _solve(cost, a, b, eps, tol, max_iter, method)
    _check_marginals(result.plan, a, b, eps, max_iter)
    return result


def entropic_ot_linear_unrolled(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> torch.Tensor:
    r""":math:`\langle \pi^*(a), C\rangle`, differentiable in ``a`` through every Sinkhorn iteration.

    The authors' gradient: the linear part of the entropic plan's cost, differentiated through the
    solver's iterations (automatic differentiation of POT's log-domain Sinkhorn,
    ``ot.solve(..., reg_type="entropy", method="sinkhorn_log", grad="autodiff")``), not the
    envelope gradient of the entropic value that :func:`entropic_ot` attaches. Converged, it is
    the exact derivative of :math:`a \mapsto \langle \pi^*(a), C\rangle` (the tests check it
    against finite differences). Memory grows with the iterations run (POT keeps the graph).
    """
    eps = check_positive("eps (entropic regularisation)", eps)
    if cost.ndim != 2 or a.shape[0] != cost.shape[0]:
        raise OTReweightError(f"a has {a.shape[0]} weights but the cost matrix has shape {tuple(cost.shape)}")
    if b is None:
        b = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=a.dtype, device=a.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = ot.solve(cost.detach().to(a.dtype), a, b.to(a.dtype), reg=eps, reg_type="entropy",
                       method="sinkhorn_log", grad="autodiff", tol=tol, max_iter=max_iter)
    _check_marginals(res.plan, a, b, eps, max_iter)
    return res.value_linear


class OTConvergenceWarning(ConvergenceWarning):
    """A POT solver stopped at ``max_iter`` before convergence: Sinkhorn with marginals further
    from the targets than 0.1 % (:func:`entropic_ot`), or the semi-relaxed solve with weights that
    one more iteration would still move (:func:`semi_relaxed_ot`). A subclass of scikit-learn's
    :class:`~sklearn.exceptions.ConvergenceWarning` (itself a ``UserWarning``)."""


def _check_marginals(plan, a, b, eps, max_iter) -> None:
    """Warn, with the marginal error, when the plan does not transport ``a`` onto ``b``."""
    p = plan.detach()
    err = max(float((p.sum(1) - a.detach()).abs().sum()), float((p.sum(0) - b.detach()).abs().sum()))
    if err > 1e-3:
        warnings.warn(OTConvergenceWarning(
            f"Sinkhorn did not converge in max_iter={max_iter} iterations at eps={eps:g}: the plan's marginals are "
            f"off by {100 * err:.2f}% of the mass; raise eps or max_iter"), stacklevel=3)


def _solve(cost, a, b, eps, tol, max_iter, method) -> OTResult:
    if method != "log":
        safe = cost.device.type == "cpu" and _abs_max(cost) / eps <= _MAX_SCALING_EXPONENT
        if method == "scaling" and not safe:
            if cost.device.type != "cpu":
                raise OTReweightError("method='scaling' runs on CPU tensors only; use method='log' or 'auto'")
            raise OTReweightError(
                f"method='scaling' needs max|cost|/eps <= {_MAX_SCALING_EXPONENT:g}, got "
                f"{_abs_max(cost) / eps:.3g}; use method='log' or 'auto', or raise eps"
            )
        if safe:
            return _entropic_ot_scaling(cost, a, b.to(a.dtype), eps, tol, max_iter)
    with warnings.catch_warnings():
        # POT warns when Sinkhorn stops at max_iter; the value is still usable and we check it below.
        warnings.simplefilter("ignore", UserWarning)
        res = ot.solve(
            cost.detach().to(a.dtype),
            a,
            b.to(a.dtype),
            reg=eps,
            reg_type="entropy",
            grad="envelope",
            tol=tol,
            max_iter=max_iter,
        )
    if res.value.device.type == "cpu" and not torch.isfinite(res.value.detach()):
        raise OTReweightError(
            f"the OT solve returned a non-finite value (eps={eps}); raise eps or check the "
            "features for extreme values"
        )
    return OTResult(res.value, res.value_linear, res.plan)


def _abs_max(cost: torch.Tensor) -> float:
    lo, hi = torch.aminmax(cost.detach())
    return max(-float(lo), float(hi))


# exp(-50) ~ 2e-22: far from underflow in float32 and float64, and the scaling iterations stay
# well conditioned.
_MAX_SCALING_EXPONENT = 50.0


def _entropic_ot_scaling(cost, a, b, eps, tol, max_iter) -> OTResult:
    """:func:`entropic_ot` by POT's Sinkhorn-Knopp (scaling) iterations, envelope gradient attached."""
    c = cost.detach().to(a.dtype)
    a0 = a.detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plan, log = ot.bregman.sinkhorn_knopp(a0, b.detach(), c, eps, numItermax=max_iter, stopThr=tol,
                                              log=True, warn=False)
    # one pass each over the (n, m) plan, no (n, m) temporaries (0 log 0 = 0)
    value_linear = torch.dot(c.reshape(-1), plan.reshape(-1))
    value = value_linear + eps * torch.special.xlogy(plan, plan).sum()
    if not torch.isfinite(value):
        raise OTReweightError(
            f"the OT solve returned a non-finite value (eps={eps}); raise eps or check the "
            "features for extreme values"
        )
    if a.requires_grad:
        f = eps * torch.log(log["u"])
        value = ot.backend.get_backend(value).set_gradients(value, (a,), (f - f.mean(),))
    return OTResult(value, value_linear, plan)


@dataclass
class SemiRelaxedResult:
    r"""Result of :func:`semi_relaxed_ot`.

    Attributes
    ----------
    weights : torch.Tensor
        The minimiser :math:`a^* = \pi^* 1` over the source weights, shape ``(n,)``, summing to
        the mass of ``b``.
    plan : torch.Tensor
        The optimal plan :math:`\pi^*`, shape ``(n, m)``.
    value : torch.Tensor
        The objective at the minimiser, :math:`\mathrm{OT}_\varepsilon(a^*, b) + \lambda\,
        \mathrm{KL}(a^* \| p)`, with :math:`\mathrm{OT}_\varepsilon` in the convention of
        :func:`entropic_ot` (POT's ``value``: :math:`\langle\pi, C\rangle + \varepsilon\sum\pi\log\pi`).
    value_linear : torch.Tensor
        :math:`\langle \pi^*, C\rangle`.
    residual : float
        :math:`\max_i |\log u'_i - \log u_i|`, how far one more fixed-point update would move
        the (log) row scalings, i.e. the relative change of the weights; 0 for ``lam = inf``.
    converged : bool
        Whether POT's stopping rule (relative change of the scalings below ``tol``) ended the
        iterations, rather than ``max_iter`` (then an :class:`OTConvergenceWarning` was issued).
    n_iter : int
        Iterations POT ran (0 for ``lam = inf``, solved by :func:`entropic_ot`).
    """

    weights: torch.Tensor
    plan: torch.Tensor
    value: torch.Tensor
    value_linear: torch.Tensor
    residual: float = 0.0
    converged: bool = True
    n_iter: int = 0


# exp(-x) underflows to 0 in float64 beyond x ~ 745; keep every row of exp(-C/eps) non-zero.
_MAX_EXPONENT = 700.0


def semi_relaxed_objective(cost: torch.Tensor, plan: torch.Tensor, prior: torch.Tensor, eps: float, lam: float) -> torch.Tensor:
    r"""The objective of :func:`semi_relaxed_ot` at a plan whose column sums are ``b``:
    :math:`\langle\pi, C\rangle + \varepsilon\sum_{ij}\pi_{ij}\log\pi_{ij} + \lambda\,\mathrm{KL}(\pi 1\,\|\,p)`
    (zero entries of :math:`\pi` contribute 0; no KL term for ``lam = inf``)."""
    value = (plan * cost).sum() + eps * torch.special.xlogy(plan, plan).sum()
    if math.isfinite(lam):
        a = plan.sum(1)
        value = value + lam * (torch.special.xlogy(a, a) - torch.special.xlogy(a, prior)).sum()
    return value


def semi_relaxed_ot(
    cost: torch.Tensor,
    prior: torch.Tensor,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    lam: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 1000,
    allowed: torch.Tensor | None = None,
) -> SemiRelaxedResult:
    r"""The weights minimising :math:`\mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\,\|\,p)` over the simplex.

    **Problem.** For a cost :math:`C \in \mathbb{R}^{n\times m}`, target masses :math:`b` (uniform
    :math:`1/m` by default, total mass 1) and a prior :math:`p` on the :math:`n` examples (same
    total mass as :math:`b`),

    .. math::

        F(a) = \mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\,\|\,p), \qquad
        a^* = \operatorname*{arg\,min}_{a \ge 0,\ \sum_i a_i = \sum_j b_j} F(a).

    Writing :math:`\mathrm{OT}_\varepsilon` as a minimum over plans and minimising jointly over
    :math:`a` and :math:`\pi`, :math:`a = \pi 1` is eliminated and the problem is the
    *semi-relaxed* entropic transport problem

    .. math::

        \min_{\pi \ge 0,\ \pi^\top 1 = b}\ \langle \pi, C\rangle
            + \varepsilon \sum_{ij} \pi_{ij}\log\pi_{ij} + \lambda\,\mathrm{KL}(\pi 1\,\|\,p),

    exact on the target side, penalised on the source side (on plans of equal mass the
    generalised KL used by POT equals the KL above). The objective is strictly convex in
    :math:`\pi` (entropy), so the plan and the weights :math:`a^* = \pi^* 1` are **unique**:
    unlike :math:`\lambda = 0` (the reference objective, whose minimiser piles each target's mass
    on its nearest examples as :math:`\varepsilon \to 0`), :math:`\lambda > 0` makes the weight
    problem well posed.

    **Solution.** Stationarity in :math:`\pi_{ij}` with a multiplier :math:`g_j` for the column
    constraint gives :math:`\pi_{ij} = u_i K_{ij} v_j`, :math:`K = e^{-C/\varepsilon}`,
    :math:`v = e^{g/\varepsilon}` and :math:`u_i = (p_i / a_i)^{\lambda/\varepsilon}`. With
    :math:`a = u \odot Kv` this is the fixed point

    .. math::

        u = \Big(\frac{p}{K v}\Big)^{\lambda/(\lambda+\varepsilon)}, \qquad v = \frac{b}{K^\top u},
        \qquad a^* = u \odot K v = p^{\lambda/(\lambda+\varepsilon)} \odot (K v)^{\varepsilon/(\lambda+\varepsilon)},

    i.e. unbalanced Sinkhorn with marginal penalties :math:`(\lambda, \infty)` and reference
    measure :math:`1_n 1_m^\top` (Chizat et al. 2018), which POT iterates:
    ``ot.unbalanced.sinkhorn_knopp_unbalanced(p, b, C, reg=eps, reg_m=(lam, inf), reg_type="kl", c=1)`` (what
    ``ot.solve(..., reg_type="KL", unbalanced=(lam, inf), unbalanced_type="KL")`` runs).
    The weights interpolate geometrically between the prior (:math:`\lambda \to \infty`) and the
    reference minimiser :math:`a^0_i = \sum_j b_j K_{ij} / \sum_k K_{kj}` (:math:`\lambda \to 0`),
    and are strictly positive (no example loses all its mass). Equivalently
    :math:`a^* \propto p \odot e^{-f/\lambda}` with :math:`f` the dual potential of
    :math:`\mathrm{OT}_\varepsilon(a^*, b)` - the gradient :func:`entropic_ot` returns - which is
    the first-order condition of :math:`F` on the simplex (the tests check it).

    Subtracting from every column of :math:`C` its minimum changes :math:`F` by a constant only
    (the column masses are fixed), so the solve uses the shifted cost; ``eps`` must keep
    :math:`e^{-C/\varepsilon}` representable (POT iterates in the scaling domain).

    Parameters
    ----------
    cost : torch.Tensor
        ``(n, m)``; not differentiated.
    prior : torch.Tensor
        ``(n,)``, positive, with the mass of ``b``.
    b : torch.Tensor, optional
        Target masses ``(m,)``, uniform :math:`1/m` when omitted.
    eps, lam : float
        :math:`\varepsilon > 0`; :math:`\lambda > 0` or ``inf`` (then :math:`a^* = p`).
    tol, max_iter : float, int
        POT's stopping rule (relative change of the scalings) and iteration cap.
    allowed : torch.Tensor of bool, optional
        ``(n, m)``: the pairs that may exchange mass; the others get an infinite cost (their
        entries of :math:`e^{-C/\varepsilon}` are exactly 0, so the plan is 0 there). With
        ``allowed[i, j] = [y_i = y'_j]`` and a prior giving each class the mass of its targets,
        the problem splits into one independent problem per class (``class_conditional``).
        Every row and column needs an allowed entry.

    Returns
    -------
    SemiRelaxedResult
    """
    eps = check_positive("eps (entropic regularisation)", eps)
    lam = float(lam)
    if not (lam > 0):  # also refuses NaN
        raise OTReweightError(f"lam (weight of the KL term) must be > 0 or inf, got {lam}")
    if cost.ndim != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise OTReweightError(f"the cost matrix must be 2-d and non-empty, got shape {tuple(cost.shape)}")
    if prior.shape != (cost.shape[0],):
        raise OTReweightError(f"the prior has shape {tuple(prior.shape)}, expected ({cost.shape[0]},)")
    if not bool((prior > 0).all()):
        raise OTReweightError("the prior must be > 0 for every example")
    cost = cost.detach().to(torch.float64)
    prior = prior.detach().to(cost)
    b = torch.full((cost.shape[1],), 1.0 / cost.shape[1]).to(cost) if b is None else b.detach().to(cost)
    if allowed is not None:
        allowed = allowed.to(device=cost.device, dtype=torch.bool)
        if allowed.shape != cost.shape or not bool(allowed.any(1).all()) or not bool(allowed.any(0).all()):
            raise OTReweightError("allowed must have the cost's shape and an allowed pair in every row and column")
        # exp(-(max + 1000 eps) / eps) is exactly 0 in float64: these pairs carry no mass.
        cost = torch.where(allowed, cost, cost[allowed].max() + 1000.0 * eps)
    if math.isinf(lam):  # the KL term pins the weights to the prior: balanced OT
        plan = entropic_ot(cost, prior, b, eps=eps, tol=tol, max_iter=max_iter).plan.detach()
        return _semi_relaxed_result(cost, plan, prior, prior, eps, lam, allowed)
    shifted = cost - cost.min(dim=0, keepdim=True).values
    worst = float(shifted.min(dim=1).values.max()) / eps
    if worst > _MAX_EXPONENT:
        raise OTReweightError(
            f"eps={eps} is too small for this cost: an example is {worst * eps:.3g} farther than the nearest "
            f"example from every target, and exp(-{worst:.0f}) underflows; raise eps"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # What ot.solve(..., reg_type="KL", unbalanced=(lam, inf), unbalanced_type="KL") runs,
        # called directly for its log (the iteration count and the last error).
        plan, log = ot.unbalanced.sinkhorn_knopp_unbalanced(
            prior, b, shifted, reg=eps, reg_m=(lam, float("inf")), reg_type="kl", c=torch.ones_like(shifted),
            numItermax=max_iter, stopThr=tol, log=True,
        )
    weights = plan.sum(1)
    if not bool(torch.isfinite(plan).all()) or not bool((weights > 0).all()):
        raise OTReweightError(
            f"the semi-relaxed OT solve failed (eps={eps}, lam={lam}): non-finite or zero weights; raise eps"
        )
    # POT ends on the column update (columns exact); one more row update would set
    # log u' = fi (log p - log Kv), with Kv = a / u: its distance to log u is the residual.
    log_u = log["logu"]
    fi = lam / (lam + eps)
    residual = float((fi * (torch.log(prior) - torch.log(weights) + log_u) - log_u).abs().max())
    out = _semi_relaxed_result(cost, plan, weights, prior, eps, lam, allowed)
    out.n_iter = len(log["err"])
    out.residual, out.converged = residual, bool(log["err"]) and float(log["err"][-1]) < tol
    if not out.converged:
        warnings.warn(OTConvergenceWarning(
            f"the semi-relaxed OT solve stopped at max_iter={max_iter} before reaching tol={tol:g} (eps={eps:g}, "
            f"lam={lam:g}): one more iteration would still move a weight by {residual:.2g} (relative); raise max_iter"),
            stacklevel=2)
    return out


def _semi_relaxed_result(cost, plan, weights, prior, eps, lam, allowed) -> SemiRelaxedResult:
    if allowed is not None:  # the plan is 0 off the allowed pairs (up to round-off in the balanced solve)
        plan = torch.where(allowed, plan, torch.zeros_like(plan))
        cost = torch.where(allowed, cost, torch.zeros_like(cost))
    value = semi_relaxed_objective(cost, plan, prior, eps, lam)
    return SemiRelaxedResult(weights, plan, value, (plan * cost).sum())


def balanced_target_mass(target_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    r"""Target masses giving every class with a target the same total mass, whatever its number of targets.

    :math:`b_j = \frac{1}{K'\,m_{y'_j}}`, with :math:`m_c` the number of targets of class
    :math:`c` and :math:`K'` the number of classes that have one: an unbalanced meta set (say 1
    example of a rare class against 10 of the others) does not pass its imbalance on to the
    weights. On a balanced meta set this is the uniform :math:`1/m`.
    """
    t = target_labels.long()
    counts = torch.bincount(t.cpu(), minlength=num_classes).to(device=t.device, dtype=torch.float64)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[t])


def class_conditional_ot(
    cost: torch.Tensor,
    labels: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int,
    eps: float = 0.1,
    lam: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 1000,
) -> SemiRelaxedResult:
    r"""Class-conditional weights: every class present gets the same total mass, OT spreads it inside the class.

    With :math:`K'` the classes present in ``labels``, class :math:`c` (:math:`n_c` examples,
    :math:`m_c` targets) receives exactly :math:`1/K'`, and inside the class

    .. math::

        a^*_c = \operatorname*{arg\,min}_{a_c \ge 0,\ \sum a_c = 1/K'}
            \mathrm{OT}_\varepsilon(a_c, b_c) + \lambda\,\mathrm{KL}(a_c \,\|\, u_c),
        \qquad u_c = \frac{1}{K' n_c},\quad b_{c,j} = \frac{1}{K' m_c},

    against the class's own targets only (:func:`semi_relaxed_ot` with ``allowed[i, j] =
    [y_i = y'_j]``: no mass crosses classes, so the problem splits into one per class). The class
    masses are balanced **by construction** - they depend neither on the class counts nor on the
    number of meta targets per class - and ``lam = inf`` gives exact inverse-frequency weights.
    With one target per class (prototypes) the solution is explicit:
    :math:`a^*_i \propto e^{-C_{i,c}/(\lambda+\varepsilon)}` within the class.

    Every class of ``labels`` needs a target; targets of classes absent from ``labels`` are dropped.
    """
    labels = labels.to(cost.device).long()
    tlabels = target_labels.to(cost.device).long()
    present = torch.unique(labels)
    missing = present[~torch.isin(present, tlabels)]
    if missing.numel():
        raise OTReweightError(
            f"class(es) {missing[:10].tolist()} have examples but no target; give every class a target "
            "(e.g. targets built from its own training examples)"
        )
    keep = torch.isin(tlabels, present)
    tlabels = tlabels[keep]
    b = balanced_target_mass(tlabels, num_classes)
    class_count = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    prior = 1.0 / (present.numel() * class_count[labels])
    return semi_relaxed_ot(cost[:, keep], prior, b, eps=eps, lam=lam, tol=tol, max_iter=max_iter,
                           allowed=labels[:, None] == tlabels[None, :])


#: The largest ``n x m`` cost matrix one dense solve takes (2**25 entries: 268 MB per float64 copy;
#: POT's Sinkhorn holds about five copies). Above it the per-batch step and the dataset-level
#: ``kl_regularized`` solve refuse with one line (``class_conditional`` is solved in blocks instead).
MAX_COST_ENTRIES = 2 ** 25
#: The largest group of classes :func:`class_conditional_blocks` solves at once (2**16 entries,
#: 0.5 MB). Smaller groups waste fewer masked entries (a group of c classes solves c times the
#: entries it needs), larger ones fewer POT calls; on ImageNet-LT sizes (1,000 classes, 10 targets
#: each) 2**16 was the fastest of 2**12 .. 2**22 (BENCHMARKS.md).
MAX_BLOCK_ENTRIES = 2 ** 16


def check_cost_size(n: int, m: int, what: str, instead: str) -> None:
    """One line when an ``n x m`` dense cost matrix would exceed :data:`MAX_COST_ENTRIES`."""
    if n * m > MAX_COST_ENTRIES:
        raise OTReweightError(
            f"{what} needs a dense {n:,} x {m:,} cost matrix ({n * m * 8 / 2 ** 30:.1f} GiB in float64, about five "
            f"copies in Sinkhorn), above the limit of {MAX_COST_ENTRIES:,} entries "
            f"(otreweight.transport.MAX_COST_ENTRIES); {instead}"
        )


@dataclass
class BlockResult:
    """Result of :func:`class_conditional_blocks`: the weights ``(n,)`` (total mass 1), the
    objective value, and whether every POT solve reached its tolerance (``n_iter``: the most
    iterations one of them ran; 0 when every class has a single target)."""

    weights: torch.Tensor
    value: torch.Tensor
    converged: bool = True
    n_iter: int = 0
    n_blocks: int = 0


def class_conditional_blocks(
    block_cost,
    pair_cost,
    labels: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int,
    eps: float = 0.1,
    lam: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 1000,
    max_entries: int | None = None,
) -> BlockResult:
    r"""The weights of :func:`class_conditional_ot`, class block by class block, in bounded memory.

    The class-conditional problem splits into one independent problem per class (no mass crosses
    classes), so it is solved without the ``n x m`` cost: ``block_cost(rows, cols)`` gives the
    ``(len(rows), len(cols))`` cost between the examples ``rows`` and the targets ``cols`` and is
    called only for classes with several targets, grouped so that a block holds at most
    ``max_entries`` entries (:data:`MAX_BLOCK_ENTRIES`; a single class larger than that is solved
    alone), each group by :func:`class_conditional_ot` (POT) and given the mass of its classes.
    A class with one target (prototypes) needs no solve: its minimiser is explicit,
    :math:`a_i \propto e^{-C_{i}/(\lambda+\varepsilon)}` within the class (uniform for
    ``lam = inf``), from ``pair_cost(rows, cols)``, the cost of each example ``rows[k]`` to its
    class's target ``cols[k]`` (shape ``(len(rows),)``). Memory: the largest block, plus ``O(n + m)``.

    Same weights and value as :func:`class_conditional_ot` on the full cost (to the solver's
    tolerance; the tests check it to 1e-6), and the same one-line errors.
    """
    eps = check_positive("eps (entropic regularisation)", eps)
    lam = float(lam)
    if not (lam > 0):
        raise OTReweightError(f"lam (weight of the KL term) must be > 0 or inf, got {lam}")
    max_entries = MAX_BLOCK_ENTRIES if max_entries is None else int(max_entries)
    labels = labels.detach().long().cpu()
    tlabels = target_labels.detach().long().cpu()
    n = labels.shape[0]
    if n == 0 or tlabels.numel() == 0:
        raise OTReweightError("the class-conditional solve needs at least one example and one target")
    counts = torch.bincount(labels, minlength=num_classes)
    tcounts = torch.bincount(tlabels, minlength=num_classes)
    present = torch.nonzero(counts).flatten()
    missing = present[tcounts[present] == 0]
    if missing.numel():
        raise OTReweightError(
            f"class(es) {missing[:10].tolist()} have examples but no target; give every class a target "
            "(e.g. targets built from its own training examples)"
        )
    k_present = present.numel()
    weights = torch.zeros(n, dtype=torch.float64)
    value = torch.zeros((), dtype=torch.float64)
    # examples and targets grouped by class: class c's rows are row_order[row_start[c]:row_start[c + 1]]
    row_order = torch.argsort(labels, stable=True)
    col_order = torch.argsort(tlabels, stable=True)
    row_start = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    col_start = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(tcounts, 0)])

    single = tcounts[labels] == 1
    if bool(single.any()):
        rows = torch.nonzero(single).flatten()
        y = labels[rows]
        cols = col_order[col_start[y]]  # the one target of each row's class
        c = pair_cost(rows, cols).detach().to(torch.float64).cpu()
        prior = 1.0 / (k_present * counts[y].to(torch.float64))
        w = _one_target_weights(c, y, prior, num_classes, k_present, eps, lam)
        weights[rows] = w
        value = value + semi_relaxed_objective(c[:, None], w[:, None], prior, eps, lam)

    groups = _class_groups(present[tcounts[present] > 1].tolist(), counts, tcounts, max_entries)
    converged, n_iter = True, 0
    for g in groups:
        rows = torch.cat([row_order[row_start[cl]:row_start[cl + 1]] for cl in g])
        cols = torch.cat([col_order[col_start[cl]:col_start[cl + 1]] for cl in g])
        cost = block_cost(rows, cols).detach().to(torch.float64).cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OTConvergenceWarning)  # one warning for all blocks, below
            res = class_conditional_ot(cost, labels[rows], tlabels[cols], num_classes, eps=eps, lam=lam, tol=tol,
                                       max_iter=max_iter)
        t = len(g) / k_present  # the group's share of the mass: its classes' 1 / K' each
        weights[rows] = res.weights * t
        # the objective is solved at unit mass; at mass t it is t F + eps t log t (entropy of t pi)
        value = value + t * res.value + eps * t * math.log(t)
        converged = converged and res.converged
        n_iter = max(n_iter, res.n_iter)
    if not converged:
        warnings.warn(OTConvergenceWarning(
            f"a class-conditional block solve stopped at max_iter={max_iter} before reaching tol={tol:g} "
            f"(eps={eps:g}, lam={lam:g}); raise max_iter"), stacklevel=2)
    return BlockResult(weights, value, converged, n_iter, len(groups))


def _one_target_weights(c, y, prior, num_classes: int, k_present: int, eps: float, lam: float) -> torch.Tensor:
    """The explicit minimiser for classes with one target: the softmax of ``-c / (lam + eps)``
    within each class, total mass ``1 / k_present`` per class (``prior`` for ``lam = inf``)."""
    if math.isinf(lam):
        return prior
    s = -c / (lam + eps)
    top = torch.full((num_classes,), -math.inf, dtype=torch.float64).scatter_reduce(0, y, s, "amax")
    e = torch.exp(s - top[y])
    return e / torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, e)[y] / k_present


def _class_groups(classes: list, counts, tcounts, max_entries: int) -> list[list]:
    """Consecutive ``classes`` grouped while a group's block (its examples x its targets) stays
    within ``max_entries`` (a class larger than that alone)."""
    groups, cur, r, m = [], [], 0, 0
    for cl in classes:
        nc, mc = int(counts[cl]), int(tcounts[cl])
        if cur and (r + nc) * (m + mc) > max_entries:
            groups.append(cur)
            cur, r, m = [], 0, 0
        cur.append(cl)
        r, m = r + nc, m + mc
    if cur:
        groups.append(cur)
    return groups
