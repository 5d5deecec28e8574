r"""Class-balanced re-sampling with plain cross-entropy.

Every draw picks a class uniformly, then an example of that class uniformly (with replacement),
so each class is seen equally often; the loss is the unweighted cross-entropy

.. math:: \mathcal L = \frac1n \sum_i -\log p_{y_i}(x_i), \qquad
          (x_i, y_i) \sim \tfrac1K \textstyle\sum_c \mathrm{Uniform}(D_c).

The sampler is the loop's (``sampling = "class_balanced"``); an epoch is as many draws as there
are training examples. (The re-sampling baseline of the LDAM-DRW code and of Kang et al. 2020.)
"""
from __future__ import annotations

from . import METHODS
from .ce import CrossEntropy


class ClassBalancedResampling(CrossEntropy):
    name = "cb_resample"
    end_to_end = True  # its paper trains it from scratch, whole network
    sampling = "class_balanced"

    def __repr__(self):
        return "ClassBalancedResampling()"


METHODS.register("cb_resample")(ClassBalancedResampling)
