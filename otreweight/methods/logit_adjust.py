r"""Logit adjustment (Menon et al., ICLR 2021): as a training loss, and post hoc.

With the training prior :math:`\pi_c = n_c / N`:

* ``logit_adjust`` trains with the logit-adjusted cross-entropy

  .. math:: \mathcal L = \frac1n\sum_i -\log
            \frac{e^{z_{i,y_i} + \tau\log\pi_{y_i}}}{\sum_c e^{z_{i,c} + \tau\log\pi_c}}

  and predicts with the plain :math:`\arg\max_c z_c`;
* ``logit_adjust_posthoc`` trains nothing: it takes a (cross-entropy) model and predicts
  :math:`\arg\max_c\, z_c - \tau\log\pi_c`, by subtracting :math:`\tau\log\pi` from the
  classifier's bias once (the saved model then predicts the adjusted classes by itself).

:math:`\tau = 1` by default. A class without training examples gets the prior of one example,
so no logit is shifted by an infinity.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import OTReweightError, is_number
from . import METHODS
from .base import Method


def log_prior(counts) -> torch.Tensor:
    r""":math:`\log(n_c / N)` per class, with empty classes counted as one example."""
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.as_tensor(np.log(n / n.sum()), dtype=torch.float32)


def _check_tau(tau) -> float:
    if not is_number(tau):
        raise OTReweightError(f"tau (logit-adjustment strength) must be a finite number, got {tau!r}")
    return float(tau)


class LogitAdjustedLoss(Method):
    """Cross-entropy on logits shifted by ``tau * log(prior)`` during training.

    Parameters
    ----------
    tau : float
        Scale of the log-prior added to the logits in the loss (1 = Balanced Softmax).
    """

    name = "logit_adjust"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = _check_tau(tau)

    def bind(self, info):
        super().bind(info)
        self.shift = (self.tau * log_prior(info.train_counts)).to(info.device)

    def loss(self, batch, meta):
        return F.cross_entropy(batch.logits + self.shift, batch.y)

    def __repr__(self):
        return f"LogitAdjustedLoss(tau={self.tau})"


class PostHocLogitAdjustment(Method):
    """Shift the classifier's bias by :math:`-\\tau\\log\\pi` (at bind time, where the counts are known).

    Parameters
    ----------
    tau : float
        Scale of the log-prior subtracted from the classifier's bias.
    """

    name = "logit_adjust_posthoc"
    trains = False

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = _check_tau(tau)

    def bind(self, info):
        super().bind(info)
        head = info.model.classifier
        if head.bias is None:
            raise OTReweightError("logit_adjust_posthoc needs a classifier with a bias to shift")
        with torch.no_grad():
            head.bias -= (self.tau * log_prior(info.train_counts)).to(head.bias.device, head.bias.dtype)

    def loss(self, batch, meta):  # pragma: no cover - never called: the method trains nothing
        raise OTReweightError("logit_adjust_posthoc trains nothing; it only adjusts a trained model")

    def __repr__(self):
        return f"PostHocLogitAdjustment(tau={self.tau})"


METHODS.register("logit_adjust")(LogitAdjustedLoss)
METHODS.register("logit_adjust_posthoc")(PostHocLogitAdjustment)
