r"""Class-balanced re-weighting (Cui et al., CVPR 2019) of the cross-entropy.

.. math:: \mathcal L = \frac1n \sum_i w_{y_i}\,\ell_{CE}(x_i, y_i), \qquad
          w_c = \frac{1-\beta}{1-\beta^{n_c}}\ \text{normalised to}\ \textstyle\sum_c w_c = K.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..class_weights import effective_number_weights
from . import METHODS
from .base import Method


class ClassBalancedCE(Method):
    """Cross-entropy weighted per class by the effective number of examples.

    Parameters
    ----------
    beta : float
        Effective-number parameter: class weight proportional to ``(1 - beta) / (1 - beta**n_c)`` (0.9999).
    """

    name = "cb"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, beta: float = 0.9999) -> None:
        self.beta = beta

    def bind(self, info):
        super().bind(info)
        self.class_weights = effective_number_weights(info.train_counts, self.beta).to(info.device)

    def loss(self, batch, meta):
        ce = F.cross_entropy(batch.logits, batch.y, reduction="none")
        return (self.class_weights[batch.y] * ce).mean()

    def __repr__(self):
        return f"ClassBalancedCE(beta={self.beta})"


METHODS.register("cb")(ClassBalancedCE)
