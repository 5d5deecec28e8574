r"""Entropic optimal transport between weighted examples and meta targets, through POT.

For a cost matrix :math:`C \in \mathbb{R}^{n\times m}`, source weights :math:`a` on the
simplex (one per training example) and target weights :math:`b` (uniform :math:`1/m` by default),

.. math::

    \mathrm{OT}_\varepsilon(a, b) = \min_{\pi \in U(a, b)} \langle \pi, C\rangle
        + \varepsilon \sum_{ij} \pi_{ij} (\log \pi_{ij} - 1),
    \qquad U(a,b) = \{\pi \ge 0 : \pi 1 = a,\ \pi^\top 1 = b\}.

It is solved by log-domain Sinkhorn in POT (:func:`ot.solve` with ``reg_type="entropy"``).
By the envelope theorem the gradient with respect to :math:`a` is the optimal dual potential
:math:`f` (defined up to a constant, which POT centres); POT's ``grad="envelope"`` attaches
exactly that gradient, so no Sinkhorn iteration is back-propagated. (With POT's default
``reg_type="KL"``, i.e. :math:`\varepsilon\,\mathrm{KL}(\pi \| a b^\top)`, the regulariser itself
depends on :math:`a` and the potential is *not* the gradient of the value; we therefore use the
entropy form, whose optimal plan is the same.)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import ot
import torch

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
    if b is None:
        b = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=a.dtype, device=a.device)
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
