"""A stage-2 step with the per-batch cost structure of the authors' reference code (a benchmark fixture).

Written by us from the description in ../shared/reference/method.md; it is the baseline our
implementation is timed against, not a library feature. Per mini-batch it:

1. recomputes the batch's features with the network in eval mode (detached);
2. forwards the whole meta set through the network in train mode (meta features for the class
   prototypes, meta logits for the 10 x meta-CE term);
3. solves entropic OT with a hand-written log-domain Sinkhorn (at most 200 iterations, stop when
   the potential changes by less than 0.1) and back-propagates through every iteration to get
   the gradient of <pi, C> w.r.t. the batch's scores; one SGD step of lr 0.01 on the scores;
4. forwards the batch in train mode and runs a full backward through the network for
   sum_i s_i CE_i + 10 * meta CE, although only the classifier is stepped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def unrolled_sinkhorn_linear_cost(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float = 0.1,
                                  max_iter: int = 200, thresh: float = 0.1) -> torch.Tensor:
    """<pi, C> of the entropic plan, differentiable through every log-domain Sinkhorn iteration."""
    log_a, log_b = torch.log(a), torch.log(b)
    u = torch.zeros_like(a)
    v = torch.zeros_like(b)
    for _ in range(max_iter):
        u_prev = u
        u = eps * (log_a - torch.logsumexp((-cost + u[:, None] + v[None, :]) / eps, dim=1)) + u
        v = eps * (log_b - torch.logsumexp((-cost + u[:, None] + v[None, :]) / eps, dim=0)) + v
        if (u - u_prev).abs().sum() < thresh:
            break
    plan = torch.exp((-cost + u[:, None] + v[None, :]) / eps)
    return (plan * cost).sum()


class ReferenceStyleStage2:
    """The reference code's stage-2 step (see the module docstring) on a model with ``features`` and ``classifier``."""

    def __init__(self, model, scores: torch.Tensor, meta_x: torch.Tensor, meta_y: torch.Tensor, num_classes: int,
                 lr: float = 2e-5, ot_lr: float = 0.01, eps: float = 0.1, channels_last: bool = True):
        self.model, self.scores = model, scores
        self.meta_x, self.meta_y, self.k = meta_x, meta_y, num_classes
        self.ot_lr, self.eps, self.cl = ot_lr, eps, channels_last
        self.opt = torch.optim.SGD(model.classifier.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def _x(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.cl else x

    def step(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model = self.model
        model.eval()
        feats = model.features(self._x(x)).detach()  # 1. eval-mode feature pass
        model.train()
        meta_f = model.features(self._x(self.meta_x))  # 2. meta set forward, train mode
        meta_logits = model.classifier(meta_f)
        protos = torch.stack([meta_f[self.meta_y == c].mean(0) for c in range(self.k)]).detach()
        # 3. cost, unrolled Sinkhorn, SGD step on the scores
        s = self.scores[idx].clone().requires_grad_(True)
        a = torch.softmax(s, 0)
        fc = 1 - F.normalize(feats, dim=1) @ F.normalize(protos, dim=1).T
        lc = (F.one_hot(y, self.k).float()[:, None, :] - torch.eye(self.k)[None]).pow(2).mean(-1)
        cost = 0.5 * fc + 0.5 * lc
        b = torch.full((self.k,), 1.0 / self.k)
        value = unrolled_sinkhorn_linear_cost(cost, a, b, self.eps)
        (g,) = torch.autograd.grad(value, s)
        new = (s - self.ot_lr * g).detach()
        self.scores[idx] = new
        # 4. train-mode forward, full backward, classifier-only step
        logits = model(self._x(x))
        loss = (F.cross_entropy(logits, y, reduction="none") * new).sum() + 10 * F.cross_entropy(meta_logits, self.meta_y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return new
