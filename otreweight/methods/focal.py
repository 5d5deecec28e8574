r"""Focal loss (Lin et al., ICCV 2017), plain and class-balanced (Cui et al., CVPR 2019).

.. math:: \mathcal L = \frac1n\sum_i w_{y_i}\,(1-p_{i})^{\gamma}\,\bigl(-\log p_{i}\bigr),
          \qquad p_i = \mathrm{softmax}(z_i)_{y_i},

with :math:`w_c = 1` (``focal``) or the effective-number weights
:math:`w_c = \frac{1-\beta}{1-\beta^{n_c}}` normalised to :math:`\sum_c w_c = K` (``cb_focal``).
:math:`\gamma = 1` as in the LDAM-DRW code's CIFAR-LT runs; :math:`\gamma = 0` is cross-entropy.
This is the softmax form of the focal loss (as the LDAM-DRW code uses it), not the sigmoid form of
Cui et al.'s own CB-focal runs. Unlike that code, :math:`p_i` is the model's probability of the
true class, not :math:`\exp(-w_{y_i}\ell_{CE})`, so the class weight only multiplies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._errors import OTReweightError, is_number
from ..class_weights import effective_number_weights
from . import METHODS
from .base import Method


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float, class_weights=None) -> torch.Tensor:
    r"""Mean over the batch of :math:`w_{y}\,(1-p_y)^\gamma\,(-\log p_y)`."""
    log_p = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    loss = (1.0 - log_p.exp()).clamp_min(0.0).pow(gamma) * -log_p
    if class_weights is not None:
        loss = class_weights[y] * loss
    return loss.mean()


def _check_gamma(gamma) -> float:
    if not is_number(gamma, low=0):
        raise OTReweightError(f"focal gamma must be a finite number >= 0, got {gamma!r}")
    return float(gamma)


class FocalLoss(Method):
    """Softmax focal loss.

    Parameters
    ----------
    gamma : float
        Focusing parameter: the loss of an example is scaled by ``(1 - p)**gamma`` (0 is cross-entropy).
    """

    name = "focal"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = _check_gamma(gamma)

    def loss(self, batch, meta):
        return focal_loss(batch.logits, batch.y, self.gamma)

    def __repr__(self):
        return f"FocalLoss(gamma={self.gamma})"


class ClassBalancedFocal(Method):
    """Softmax focal loss with class-balanced (effective-number) class weights.

    Parameters
    ----------
    gamma : float
        Focusing parameter: the loss of an example is scaled by ``(1 - p)**gamma`` (0 is cross-entropy).
    beta : float
        Effective-number parameter of the class weights, ``(1 - beta) / (1 - beta**n_c)`` (0.9999).
    """

    name = "cb_focal"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, gamma: float = 1.0, beta: float = 0.9999) -> None:
        self.gamma = _check_gamma(gamma)
        effective_number_weights([1, 2], beta)  # fail on a bad beta now, not after stage 1
        self.beta = float(beta)

    def bind(self, info):
        super().bind(info)
        self.class_weights = effective_number_weights(info.train_counts, self.beta).to(info.device)

    def loss(self, batch, meta):
        return focal_loss(batch.logits, batch.y, self.gamma, self.class_weights)

    def __repr__(self):
        return f"ClassBalancedFocal(gamma={self.gamma}, beta={self.beta})"


METHODS.register("focal")(FocalLoss)
METHODS.register("cb_focal")(ClassBalancedFocal)
