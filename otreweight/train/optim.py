"""Optimiser and learning-rate schedule of a stage, built from its :class:`~otreweight.config.FitConfig`.

* ``optimizer="sgd"``: ``torch.optim.SGD(lr, momentum, nesterov, weight_decay)`` (Nesterov only
  with a momentum above 0);
* ``optimizer="adamw"``: ``torch.optim.AdamW(lr, betas=(momentum, 0.999), weight_decay)``; the
  decay is decoupled from the gradient, as Loshchilov & Hutter;
* the schedule is a ``LambdaLR`` over epochs with :meth:`FitConfig.lr_factor` (linear warm-up, then
  step decay at the milestones or cosine decay), stepped once per epoch by the loop.
"""
from __future__ import annotations

import torch

from .._errors import check_choice
from ..config import OPTIMIZERS, FitConfig


def build_optimizer(params, config: FitConfig) -> torch.optim.Optimizer:
    """The stage's optimiser over ``params``."""
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=(config.momentum, 0.999),
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: FitConfig):
    """Per-epoch multiplier :meth:`FitConfig.lr_factor` of the base learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
