r"""OT at test time (``ot-posthoc``): rebalance a trained model's predictions to a class marginal by Sinkhorn.

The post-hoc family of OTLM (Peng et al. 2022, "Optimal transport for long-tailed recognition with
learnable cost matrix") and OTTER (Shin et al. 2024, "OTTER: effortless label distribution
adaptation of zero-shot models"): trains nothing. Given the model's probabilities :math:`P` on the
:math:`n` examples of an evaluated split and a class marginal :math:`q`, it solves the entropic OT
problem

.. math:: T^\star = \arg\min_{T \in U(\frac1n\mathbf 1_n,\ q)} \langle T, -\log P\rangle - \varepsilon H(T)

(POT, ``ot.solve(..., reg_type="entropy", method="sinkhorn_log")``, log domain) and predicts
:math:`\arg\max_c T^\star_{ic}`: the assignment of the examples to classes closest to the model's
beliefs whose class totals are :math:`q`. Its solution has the form :math:`\log T_{ic} =
(\log P_{ic} + g_c + f_i)/\varepsilon`, so the prediction is the model's with a per-class shift
:math:`g_c` - a logit adjustment whose shifts are fitted to the marginal on the evaluated examples
themselves. It is **transductive**: a prediction depends on the other examples evaluated with it.

A large split is solved in batches of ``batch_size`` examples (each batch's plan has marginals
:math:`\frac1{n_b}\mathbf 1` and :math:`q`), so memory stays :math:`O(\mathrm{batch\_size}\cdot K)`.

``marginal``: ``"uniform"`` (a balanced test set, the default), ``"train"`` (the training class
frequencies), ``"estimate"`` (the EM estimate of :func:`otreweight.prior.estimate_prior` on the
evaluated split, with the training frequencies as the source prior) or a list of K numbers.
"""
from __future__ import annotations

import numpy as np
import ot
import torch

from .._errors import OTReweightError, is_number
from . import METHODS
from .base import Method

MARGINALS = ("uniform", "train", "estimate")


def sinkhorn_plan(log_probs, marginal, reg: float = 0.1, max_iter: int = 5000, tol: float = 1e-7) -> np.ndarray:
    r"""The entropic OT plan between :math:`\frac1n\mathbf 1_n` and ``marginal`` for the cost
    :math:`-\log P` (``log_probs``: an ``(n, K)`` array of log-probabilities), in the log domain."""
    lp = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64)  # POT's torch backend: fast log-sum-exp
    n = lp.shape[0]
    b = torch.as_tensor(np.asarray(marginal), dtype=torch.float64).clamp_min(1e-12)
    res = ot.solve(-lp, torch.full((n,), 1.0 / n, dtype=torch.float64), b / b.sum(), reg=float(reg),
                   reg_type="entropy", method="sinkhorn_log", max_iter=max_iter, tol=tol)
    return res.plan.numpy()


class OTPostHoc(Method):
    """Sinkhorn rebalancing of an evaluated split's predictions to ``marginal`` (see the module docstring).

    Parameters
    ----------
    marginal : {"uniform", "train", "estimate"} or list of float
        The class marginal the predictions are moved to: uniform, the training class frequencies, the
        prior estimated on the split (EM, :func:`otreweight.estimate_prior`), or given frequencies.
    reg : float
        Entropic regularisation of the Sinkhorn solve (0.1).
    batch_size : int
        Examples solved together; a larger split is rebalanced batch by batch (10,000).
    max_iter : int
        Sinkhorn iterations at most (5,000).
    tol : float
        Sinkhorn stopping tolerance on the marginals (1e-7).
    """

    name = "ot-posthoc"
    trains = False
    transductive = True

    def __init__(self, marginal="uniform", reg: float = 0.1, batch_size: int = 10000, max_iter: int = 5000,
                 tol: float = 1e-7) -> None:
        if isinstance(marginal, str):
            if marginal not in MARGINALS:
                raise OTReweightError(f"ot-posthoc marginal must be one of {', '.join(MARGINALS)} or a list of "
                                      f"class frequencies, got {marginal!r}")
        else:
            from ..prior import check_prior

            marginal = [float(v) for v in check_prior(marginal, None, "ot-posthoc marginal")]
        if not is_number(reg, above=0):
            raise OTReweightError(f"ot-posthoc reg (entropic regularisation) must be a number > 0, got {reg!r}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise OTReweightError(f"ot-posthoc batch_size must be an integer >= 1, got {batch_size!r}")
        self.marginal, self.reg, self.batch_size = marginal, float(reg), int(batch_size)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.train_counts = None

    def bind(self, info):
        super().bind(info)
        self.train_counts = np.asarray(info.train_counts, dtype=np.float64)

    def target(self, log_probs: np.ndarray) -> np.ndarray:
        """The class marginal the predictions are rebalanced to."""
        k = log_probs.shape[1]
        if not isinstance(self.marginal, str):
            if len(self.marginal) != k:
                raise OTReweightError(f"ot-posthoc marginal has {len(self.marginal)} entries for {k} classes")
            return np.asarray(self.marginal)
        if self.marginal == "uniform":
            return np.full(k, 1.0 / k)
        if self.train_counts is None:
            raise OTReweightError(f"ot-posthoc marginal={self.marginal} needs the training counts (bind the method first)")
        train = np.maximum(self.train_counts, 1.0) / np.maximum(self.train_counts, 1.0).sum()
        if self.marginal == "train":
            return train
        from ..prior import estimate_prior

        return estimate_prior(np.exp(log_probs), source_prior=train, method="em")

    def plans(self, logits):
        """The OT plan of every batch of ``logits`` (rows in order), each ``(n_b, K)``."""
        lp = torch.log_softmax(torch.as_tensor(logits).double(), dim=1).cpu().numpy()
        q = self.target(lp)
        return [sinkhorn_plan(lp[i:i + self.batch_size], q, self.reg, self.max_iter, self.tol)
                for i in range(0, lp.shape[0], self.batch_size)]

    def transform_logits(self, logits: torch.Tensor) -> torch.Tensor:
        r"""Scores whose arg max is the rebalanced prediction: :math:`\log(n_b T_{ic})`."""
        plans = [np.log(np.clip(t * t.shape[0], 1e-300, None)) for t in self.plans(logits.detach())]
        return torch.as_tensor(np.concatenate(plans), dtype=torch.float32, device=logits.device)

    def loss(self, batch, meta):  # pragma: no cover - never called: the method trains nothing
        raise OTReweightError("ot-posthoc trains nothing; it rebalances a trained model's predictions")

    def __repr__(self):
        return f"OTPostHoc(marginal={self.marginal!r}, reg={self.reg}, batch_size={self.batch_size})"


METHODS.register("ot-posthoc")(OTPostHoc)
