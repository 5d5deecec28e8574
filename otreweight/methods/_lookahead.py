r"""The virtual (look-ahead) SGD step shared by the bilevel re-weighters (L2RW, Meta-Weight-Net).

Given per-example losses :math:`\ell_i(\theta)` and weights :math:`w_i`, the look-ahead parameters are

.. math:: \hat\theta(w) = \theta - \eta\,\nabla_\theta \sum_i w_i\,\ell_i(\theta),

at the loop's current learning rate :math:`\eta` (a plain SGD step, no momentum or weight decay,
as both papers' code), kept differentiable in :math:`w`. The meta loss
:math:`\frac1m\sum_j \ell_{CE}(x'_j, y'_j;\hat\theta(w))` is then evaluated with
:func:`torch.func.functional_call`, so the model itself is never modified.

The trainable parameters are those of the loop's optimiser. When they are all in the classifier
(``trainable="classifier"``) the look-ahead model is the classifier alone, applied to the detached
meta features; otherwise it is the whole model applied to the meta inputs (in the model's current
mode, with copies of its buffers so batch-norm statistics are not touched).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call


class LookAhead:
    """Differentiable virtual step on the optimiser's parameters of ``model``."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
        head = {id(p) for p in model.classifier.parameters()}
        self.head_only = trainable <= head
        self.module = model.classifier if self.head_only else model
        named = [(n, p) for n, p in self.module.named_parameters() if id(p) in trainable]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.optimizer = optimizer

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, weighted_loss: torch.Tensor) -> list[torch.Tensor]:
        """:math:`\\theta - \\eta\\nabla_\\theta L`, differentiable (the loss's graph is kept for the real step)."""
        grads = torch.autograd.grad(weighted_loss, self.params, create_graph=True, retain_graph=True, allow_unused=True)
        return [p if g is None else p - self.lr * g for p, g in zip(self.params, grads)]

    def meta_loss(self, params: list[torch.Tensor], meta, index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the meta examples ``index`` (all by default) under ``params``."""
        inputs = meta.features() if self.head_only else meta.x
        y = meta.y
        if index is not None:
            inputs, y = inputs[index], y[index]
        if not self.head_only and inputs.dim() == 4 and getattr(meta, "channels_last", False):
            inputs = inputs.contiguous(memory_format=torch.channels_last)  # the loop's layout on the CPU
        state = {n: b.clone() for n, b in self.module.named_buffers()}
        state.update(zip(self.names, params))
        logits = functional_call(self.module, state, (inputs,), strict=False)
        return F.cross_entropy(logits, y)
