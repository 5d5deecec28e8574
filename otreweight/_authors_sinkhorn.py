r"""The authors' truncated log-domain Sinkhorn (the reference code's ``SinkhornDistance``), on the device.

The one Sinkhorn written here rather than taken from POT: its stopping rule (the change of the
target-side potential) and the iterate it selects are not among POT's solvers. It is re-exported
by :mod:`otreweight.transport`, the OT core, as ``transport.authors_sinkhorn``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._errors import OTReweightError, check_positive


@dataclass
class AuthorsSinkhornResult:
    """Result of :func:`authors_sinkhorn`.

    Attributes
    ----------
    value_linear : torch.Tensor
        :math:`\\langle \\pi_k, C\\rangle` at the iteration :math:`k` where the authors' rule stops
        (scalar), differentiable in ``a`` through the :math:`k` iterations.
    plan : torch.Tensor
        :math:`\\pi_k`, shape ``(n, m)``.
    n_iter : torch.Tensor
        :math:`k`, a 0-d integer tensor on the cost's device (reading it syncs the device).
    missed : torch.Tensor
        0-d bool tensor: the rule did not stop within ``window`` iterations (then :math:`k` =
        ``window``); the authors' loop would have gone on, up to 200 iterations.
    """

    value_linear: torch.Tensor
    plan: torch.Tensor
    n_iter: torch.Tensor
    missed: torch.Tensor


def authors_sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    threshold: float = 0.1,
    window: int = 16,
) -> AuthorsSinkhornResult:
    r"""The authors' truncated log-domain Sinkhorn: :math:`\langle\pi_k, C\rangle`, differentiable in ``a``.

    The iterations of the reference code (``Sinkhorn_distance_fl.SinkhornDistance``, see
    docs/reproducing.md), written for ``cost`` of shape ``(n, m)`` with ``a`` on the ``n`` training
    examples and ``b`` (uniform by default) on the ``m`` targets. Potentials start at zero; each
    iteration updates the target-side potential, then the example-side one,

    .. math::
        g &\leftarrow \varepsilon\big(\log(b + 10^{-8}) - \mathrm{LSE}_i((f_i + g_j - C_{ij})/\varepsilon)\big) + g \\
        f &\leftarrow \varepsilon\big(\log(a + 10^{-8}) - \mathrm{LSE}_j((f_i + g_j - C_{ij})/\varepsilon)\big) + f

    and the loop stops at the first iteration :math:`k` whose change :math:`\|g_k - g_{k-1}\|_1`
    is below ``threshold`` (0.1). The value is :math:`\sum_{ij}\pi_{ij}C_{ij}` with
    :math:`\pi = \exp((f_k + g_k - C)/\varepsilon)`; its gradient with respect to ``a`` runs
    through the :math:`k` iterations (automatic differentiation), as in the reference code.

    The stop is decided on the device: ``window`` iterations are computed and the first that meets
    the rule is selected by index, so no value is read back to the host. When none of them meets
    it, iteration ``window`` is used and ``missed`` is set (the reference loop allows 200; with
    ``window=200`` the result is theirs in every case, at the cost of 200 iterations per call).

    POT is not used here: its Sinkhorn loops test convergence in Python every 10 iterations (a
    host synchronisation per test on an accelerator), none of them stops on the change of a
    potential, and none exposes the iterates this rule selects from.
    """
    eps = check_positive("eps (entropic regularisation)", eps)
    if cost.ndim != 2 or a.shape[0] != cost.shape[0] or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise OTReweightError(f"a has {a.shape[0]} weights but the cost matrix has shape {tuple(cost.shape)}")
    if int(window) != window or window < 1:
        raise OTReweightError(f"window (Sinkhorn iterations computed per call) must be an integer >= 1, got {window!r}")
    c = cost.detach().to(a.dtype)
    if b is None:
        b = torch.full((c.shape[1],), 1.0 / c.shape[1], dtype=a.dtype, device=a.device)
    log_a, log_b = torch.log(a + 1e-8), torch.log(b.to(a.dtype) + 1e-8)
    f = torch.zeros_like(a)
    g = torch.zeros_like(log_b)
    fs, gs, changes = [], [], []
    for _ in range(int(window)):
        g_prev = g
        g = eps * (log_b - torch.logsumexp((-c + g[None, :] + f[:, None]) / eps, dim=0)) + g
        f = eps * (log_a - torch.logsumexp((-c + g[None, :] + f[:, None]) / eps, dim=1)) + f
        fs.append(f)
        gs.append(g)
        changes.append((g - g_prev).abs().sum())
    stopped = torch.stack(changes) < threshold
    # the first iteration that meets the rule, else the last one: argmax of the first True
    pick = torch.where(stopped.any(), stopped.to(torch.int8).argmax(), torch.tensor(len(fs) - 1, device=c.device))
    f_k, g_k = torch.stack(fs)[pick], torch.stack(gs)[pick]
    plan = torch.exp((-c + g_k[None, :] + f_k[:, None]) / eps)
    return AuthorsSinkhornResult((plan * c).sum(), plan, pick + 1, ~stopped.any())
