r"""Balanced Softmax (Ren et al., NeurIPS 2020).

The softmax of the training distribution is re-weighted by the class counts,

.. math:: \mathcal L = \frac1n\sum_i -\log
          \frac{n_{y_i}\, e^{z_{i,y_i}}}{\sum_c n_c\, e^{z_{i,c}}}
          = \frac1n\sum_i \ell_{CE}\bigl(z_i + \log\pi,\ y_i\bigr),

and the model predicts with the plain :math:`\arg\max_c z_c`. It is the logit-adjusted loss
(:mod:`otreweight.methods.logit_adjust`) with :math:`\tau = 1`.
"""
from __future__ import annotations

import torch.nn.functional as F

from . import METHODS
from .base import Method
from .logit_adjust import log_prior


class BalancedSoftmax(Method):
    name = "balanced_softmax"
    end_to_end = True  # its paper trains it from scratch, whole network

    def bind(self, info):
        super().bind(info)
        self.log_prior = log_prior(info.train_counts).to(info.device)

    def loss(self, batch, meta):
        return F.cross_entropy(batch.logits + self.log_prior, batch.y)

    def __repr__(self):
        return "BalancedSoftmax()"


METHODS.register("balanced_softmax")(BalancedSoftmax)
