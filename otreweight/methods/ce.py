"""Plain cross-entropy: :math:`\\frac1n\\sum_i -\\log p_{y_i}(x_i)`."""
from __future__ import annotations

import torch.nn.functional as F

from . import METHODS
from .base import Method


class CrossEntropy(Method):
    name = "ce"

    def loss(self, batch, meta):
        return F.cross_entropy(batch.logits, batch.y)


METHODS.register("ce")(CrossEntropy)
