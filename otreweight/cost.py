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

from ._errors import OTReweightError, check_choice

LABEL_SCALES = ("reference", "unit")


def feature_cost(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    r"""Cosine cost :math:`C_{ij} = 1 - \langle f_i, g_j\rangle / (\|f_i\|\,\|g_j\|)`."""
    if features.shape[-1] != target_features.shape[-1]:
        raise OTReweightError(
            f"feature sizes differ: batch has {features.shape[-1]}, meta targets have "
            f"{target_features.shape[-1]}; compute both with the same backbone"
        )
    f = F.normalize(features, dim=1, eps=1e-12)
    g = F.normalize(target_features, dim=1, eps=1e-12)
    return 1.0 - f @ g.T


def label_cost(
    labels: torch.Tensor, target_labels: torch.Tensor, num_classes: int, scale: str = "reference"
) -> torch.Tensor:
    r"""One-hot label distance: :math:`2/K` (``"reference"``) or :math:`1` (``"unit"``) between
    different classes, :math:`0` within a class."""
    check_choice("label scale", scale, LABEL_SCALES)
    different = (labels.view(-1, 1) != target_labels.view(1, -1)).to(torch.get_default_dtype())
    if scale == "reference":
        different = different * (2.0 / num_classes)
    return different.to(labels.device)


def combined_cost(
    features: torch.Tensor,
    labels: torch.Tensor,
    target_features: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int,
    alpha: float = 0.5,
    label_scale: str = "reference",
) -> torch.Tensor:
    r""":math:`\alpha\,C^{feat} + (1-\alpha)\,C^{label}`."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise OTReweightError(f"cost mixing coefficient alpha must lie in [0, 1], got {alpha}")
    check_choice("label scale", label_scale, LABEL_SCALES)
    if features.shape[-1] != target_features.shape[-1]:
        feature_cost(features, target_features)  # raises the one-line error
    # alpha (1 - <f, g>) + (1 - alpha) s [y != y'] in three passes over the (n, m) matrix
    # (matrix product, comparison, fused add) instead of one per term.
    f = F.normalize(features, dim=1, eps=1e-12)
    g = F.normalize(target_features, dim=1, eps=1e-12)
    cost = torch.addmm(torch.full((), float(alpha), dtype=f.dtype, device=f.device), f, g.T, alpha=-float(alpha))
    different = labels.view(-1, 1).to(cost.device) != target_labels.view(1, -1).to(cost.device)
    scale = 2.0 / num_classes if label_scale == "reference" else 1.0
    return cost.add_(different.to(cost.dtype), alpha=(1.0 - float(alpha)) * scale)


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
    return COSTS[name](features, labels, target_features, target_labels, num_classes, alpha, label_scale)
