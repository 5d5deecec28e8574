r"""Cost matrices between a batch of training examples and the meta targets.

For a batch of :math:`n` examples with features :math:`f_i` and labels :math:`y_i`, and
:math:`m` meta targets with features :math:`g_j` and labels :math:`y'_j`, the cost matrix
:math:`C \in \mathbb{R}^{n \times m}` is one of

* ``"feature"``: :math:`C_{ij} = 1 - \cos(f_i, g_j)`, in :math:`[0, 2]`;
* ``"label"``: the distance between one-hot labels. With ``label_scale="reference"`` it is the
  mean over the :math:`K` classes of the squared difference of the one-hot vectors,
  :math:`0` for the same class and :math:`2/K` otherwise (the authors' code); with
  ``label_scale="unit"`` it is :math:`0` / :math:`1`, independent of :math:`K`;
* ``"combined"`` (default): :math:`\alpha\,C^{feat} + (1-\alpha)\,C^{label}`, :math:`\alpha = 0.5`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._errors import OTReweightError, check_choice, check_labels

LABEL_SCALES = ("reference", "unit")


def _unit_rows(features: torch.Tensor, target_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets scaled to unit rows (checked to have the same width)."""
    if features.shape[-1] != target_features.shape[-1]:
        raise OTReweightError(
            f"feature sizes differ: batch has {features.shape[-1]}, meta targets have "
            f"{target_features.shape[-1]}; compute both with the same backbone"
        )
    return F.normalize(features, dim=1, eps=1e-12), F.normalize(target_features, dim=1, eps=1e-12)


def label_distance(num_classes: int, scale: str) -> float:
    """The label cost between two different classes: :math:`2/K` (``"reference"``) or 1 (``"unit"``)."""
    check_choice("label scale", scale, LABEL_SCALES)
    return 2.0 / num_classes if scale == "reference" else 1.0


def _different(labels: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
    return labels.view(-1, 1) != target_labels.view(1, -1).to(labels.device)


def feature_cost(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    r"""Cosine cost :math:`C_{ij} = 1 - \langle f_i, g_j\rangle / (\|f_i\|\,\|g_j\|)`."""
    f, g = _unit_rows(features, target_features)
    return 1.0 - f @ g.T


def label_cost(
    labels: torch.Tensor, target_labels: torch.Tensor, num_classes: int, scale: str = "reference"
) -> torch.Tensor:
    r"""One-hot label distance: :math:`2/K` (``"reference"``) or :math:`1` (``"unit"``) between
    different classes, :math:`0` within a class."""
    distance = label_distance(num_classes, scale)
    return _different(labels, target_labels).to(torch.get_default_dtype()) * distance


def combined_cost(
    features: torch.Tensor,
    labels: torch.Tensor,
    target_features: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int,
    alpha: float = 0.5,
    label_scale: str = "reference",
) -> torch.Tensor:
    r""":math:`\alpha\,C^{feat} + (1-\alpha)\,C^{label}`, computed as
    :math:`\alpha - \alpha \langle \hat f_i, \hat g_j\rangle + (1-\alpha) d\,[y_i \ne y'_j]` in three
    passes over the :math:`n \times m` matrix (matrix product, comparison, fused add); :math:`d` is
    the label distance of ``label_scale``."""
    f, g = _unit_rows(features, target_features)
    return combined_cost_unit(f, labels, g, target_labels, num_classes, alpha, label_scale)


def combined_cost_unit(
    f: torch.Tensor,
    labels: torch.Tensor,
    g: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int,
    alpha: float = 0.5,
    label_scale: str = "reference",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r""":func:`combined_cost` of features already scaled to unit rows (``f`` and ``g``), e.g. meta
    targets normalised once per epoch (:meth:`~otreweight.targets.MetaTargets.unit_features`):
    the matrix product runs in the features' dtype and the ``(n, m)`` result is returned in
    ``out_dtype`` (the features' dtype by default)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise OTReweightError(f"cost mixing coefficient alpha must lie in [0, 1], got {alpha}")
    if f.shape[-1] != g.shape[-1]:
        raise OTReweightError(f"feature sizes differ: batch has {f.shape[-1]}, meta targets have {g.shape[-1]}; "
                              "compute both with the same backbone")
    distance = label_distance(num_classes, label_scale)
    alpha = float(alpha)
    cost = torch.addmm(torch.full((), alpha, dtype=f.dtype, device=f.device), f, g.T, alpha=-alpha)
    cost = cost if out_dtype is None else cost.to(out_dtype)
    if alpha == 1.0:
        return cost
    return cost.add_(_different(labels.to(cost.device), target_labels).to(cost.dtype), alpha=(1.0 - alpha) * distance)


def _feature_only(features, labels, target_features, target_labels, num_classes, alpha, label_scale):
    return feature_cost(features, target_features)


def _label_only(features, labels, target_features, target_labels, num_classes, alpha, label_scale):
    return label_cost(labels, target_labels, num_classes, label_scale).to(features.dtype)


COSTS: dict[str, Callable[..., torch.Tensor]] = {
    "feature": _feature_only,
    "label": _label_only,
    "combined": combined_cost,
}


def cost_matrix(
    name: str,
    features: torch.Tensor,
    labels: torch.Tensor,
    target_features: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int,
    alpha: float = 0.5,
    label_scale: str = "reference",
) -> torch.Tensor:
    """Cost matrix ``(n_batch, n_targets)`` by name: ``"feature"``, ``"label"`` or ``"combined"``."""
    check_choice("cost", name, COSTS)
    if name != "feature":
        check_labels("labels", labels, num_classes)
        check_labels("target labels", target_labels, num_classes)
    return COSTS[name](features, labels, target_features, target_labels, num_classes, alpha, label_scale)
