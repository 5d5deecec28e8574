r"""Class-balanced weights by the effective number of samples (Cui et al., CVPR 2019).

For class counts :math:`n_c`, :math:`w_c = \frac{1-\beta}{1-\beta^{n_c}}`, normalised so that the
weights of the :math:`K` classes sum to :math:`K`. :math:`\beta = 0.9999` on CIFAR-LT; as
:math:`\beta \to 1` this tends to inverse frequency, :math:`\beta = 0` gives uniform weights.
A class with no example gets weight 0 (and the others are normalised to sum to ``K``).
"""
from __future__ import annotations

import numpy as np
import torch

from ._errors import OTReweightError


def effective_number_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """Per-class weights ``(K,)`` from class counts, summing to ``K``."""
    if not 0.0 <= float(beta) < 1.0:
        raise OTReweightError(f"beta must lie in [0, 1), got {beta}")
    n = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if n.ndim != 1 or n.numel() == 0 or bool((n < 0).any()):
        raise OTReweightError("class counts must be a non-empty 1-d array of non-negative numbers")
    present = n > 0
    if not bool(present.any()):
        raise OTReweightError("every class count is zero; there is nothing to weight")
    w = torch.zeros_like(n)
    # 1 - beta^n computed stably as -expm1(n * log(beta)); beta = 0 means uniform weights.
    if beta == 0.0:
        w[present] = 1.0
    else:
        w[present] = (1.0 - beta) / (-torch.expm1(n[present] * np.log(beta)))
    w = w / w.sum() * n.numel()
    return w.to(torch.float32)
