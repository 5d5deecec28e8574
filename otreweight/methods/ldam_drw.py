r"""LDAM loss with deferred re-weighting, LDAM-DRW (Cao et al., NeurIPS 2019).

Label-distribution-aware margins: the true-class logit is lowered by a margin that grows as the
class gets rarer, then the logits are scaled by :math:`s`,

.. math:: \mathcal L = \frac{\sum_i w_{y_i}\,\ell_i}{\sum_i w_{y_i}}, \qquad
          \ell_i = -\log\frac{e^{s(z_{i,y_i} - m_{y_i})}}{e^{s(z_{i,y_i} - m_{y_i})} + \sum_{c\ne y_i} e^{s z_{i,c}}},
          \qquad m_c = \frac{C}{n_c^{1/4}},

with :math:`C` chosen so that :math:`\max_c m_c` = ``max_margin`` (0.5) and :math:`s = 30`.
Deferred re-weighting: :math:`w_c = 1` before epoch ``drw_epoch``, then the effective-number
weights :math:`w_c = \frac{1-\beta}{1-\beta^{n_c}}` (normalised to sum :math:`K`, :math:`\beta=0.9999`).
The switch is at ``drw_epoch`` (0-based, absolute) when given, else at ``drw_fraction`` (0.8) of the
stage's epochs: epoch 160 of 200. The weighted mean divides by :math:`\sum_i w_{y_i}`, as the
authors' code does.

``head="cosine"`` (default, as the authors' code for LDAM): :math:`z_{i,c} = \cos(f_i, w_c)`, the
classifier is replaced by :class:`CosineClassifier` in ``prepare_model``. ``head="linear"`` keeps
the plain linear logits (then :math:`s` multiplies unbounded logits; lower it).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import OTReweightError, check_choice, is_number
from ..class_weights import effective_number_weights
from . import METHODS
from .base import Method

HEADS = ("cosine", "linear")


class CosineClassifier(nn.Linear):
    r"""Logits :math:`z_c = \cos(f, w_c)`; the bias is kept (for the model contract) but unused.

    Its ``state_dict`` holds the plain linear layer with the same arg-max (unit-norm rows, zero
    bias: :math:`w_c^\top f / \|w_c\| = \|f\|\cos(f, w_c)`), so a saved model is rebuilt and
    scored as an ordinary :class:`~torch.nn.Linear` head. Loading such a state back gives the same
    cosine function (the row norms restart at 1).
    """

    def forward(self, x):
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = F.normalize(self.weight.detach(), dim=1)
        if self.bias is not None:
            destination[prefix + "bias"] = torch.zeros_like(self.bias.detach())


def ldam_margins(counts, max_margin: float = 0.5) -> torch.Tensor:
    r""":math:`m_c \propto n_c^{-1/4}`, the largest equal to ``max_margin`` (an empty class counts as one)."""
    m = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** -0.25
    return torch.as_tensor(m * (max_margin / m.max()), dtype=torch.float32)


class LDAMDRW(Method):
    """LDAM margins on the true-class logit, with deferred class-balanced re-weighting.

    Parameters
    ----------
    max_margin : float
        The largest class margin (that of the rarest class); the others scale as ``n_c**(-1/4)``.
    s : float
        Scale of the logits inside the loss.
    beta : float
        Effective-number parameter of the deferred class weights.
    drw_epoch : int or None
        Epoch (0-based) from which the class weights apply; null: ``drw_fraction`` of the epochs.
    drw_fraction : float
        Fraction of the stage's epochs before the class weights apply (0.8: epoch 160 of 200).
    head : {"cosine", "linear"}
        ``"cosine"``: logits are cosines between features and class vectors (the authors'); ``"linear"``: plain logits.
    """

    name = "ldam_drw"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, max_margin: float = 0.5, s: float = 30.0, beta: float = 0.9999, drw_epoch: int | None = None,
                 drw_fraction: float = 0.8, head: str = "cosine") -> None:
        for what, v in (("max_margin", max_margin), ("s (logit scale)", s)):
            if not is_number(v, above=0):
                raise OTReweightError(f"ldam_drw {what} must be a finite number > 0, got {v!r}")
        if drw_epoch is not None and (int(drw_epoch) != drw_epoch or drw_epoch < 0):
            raise OTReweightError(f"ldam_drw drw_epoch must be an integer >= 0 (or null), got {drw_epoch!r}")
        if not (isinstance(drw_fraction, (int, float)) and 0.0 <= drw_fraction <= 1.0):
            raise OTReweightError(f"ldam_drw drw_fraction must lie in [0, 1], got {drw_fraction!r}")
        effective_number_weights([1, 2], beta)
        self.max_margin, self.s, self.beta = float(max_margin), float(s), float(beta)
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.drw_fraction = float(drw_fraction)
        self.head = check_choice("ldam_drw head", head, HEADS)
        self.class_weights: torch.Tensor | None = None

    def prepare_model(self, model):
        if self.head == "cosine" and not isinstance(model.classifier, CosineClassifier):
            old = model.classifier
            new = CosineClassifier(old.in_features, old.out_features, bias=old.bias is not None)
            new.to(old.weight.device, old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                if new.bias is not None:
                    new.bias.zero_()
            model.classifier = new

    def bind(self, info):
        super().bind(info)
        self.margins = ldam_margins(info.train_counts, self.max_margin).to(info.device)
        self.drw_weights = effective_number_weights(info.train_counts, self.beta).to(info.device)

    def switch_epoch(self) -> int:
        """The 0-based epoch from which the class-balanced weights are used."""
        if self.drw_epoch is not None:
            return self.drw_epoch
        return int(round(self.drw_fraction * self.info.epochs))

    def start_epoch(self, epoch, meta):
        self.class_weights = self.drw_weights if epoch >= self.switch_epoch() else None

    def loss(self, batch, meta):
        shifted = batch.logits - F.one_hot(batch.y, batch.logits.shape[1]) * self.margins[batch.y, None]
        return F.cross_entropy(self.s * shifted, batch.y, weight=self.class_weights)

    def __repr__(self):
        when = f"drw_epoch={self.drw_epoch}" if self.drw_epoch is not None else f"drw_fraction={self.drw_fraction}"
        return f"LDAMDRW(max_margin={self.max_margin}, s={self.s}, beta={self.beta}, {when}, head={self.head!r})"


METHODS.register("ldam_drw")(LDAMDRW)
