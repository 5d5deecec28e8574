"""The meta set as methods see it (:class:`otreweight.methods.base.MetaView`).

The balanced meta set is small (10 per class by default), so it always sits on the device as one
tensor. Its features are computed in eval mode without gradients: once per run with a frozen
backbone (through the run's feature cache), once per epoch otherwise (``invalidate``).
"""
from __future__ import annotations

import torch

from ..targets import class_means
from .features import compute_features, layout


class MetaSet:
    """``x`` / ``y`` on the device; ``features()``, ``class_mean_features()``, ``logits()``."""

    def __init__(self, model, x, y, num_classes: int, frozen: bool, batch_size: int, channels_last: bool,
                 frozen_features=None) -> None:
        self.model, self.x, self.y = model, x, y
        self.frozen_features = frozen_features
        self.num_classes, self.frozen = num_classes, frozen
        self.batch_size, self.channels_last = batch_size, channels_last
        self._features = self._mean_features = None

    def invalidate(self) -> None:
        """Forget features computed with an older backbone (a no-op when the backbone is frozen)."""
        if not self.frozen:
            self._features = self._mean_features = None

    def features(self):
        """Detached meta features ``(M, d)``, eval mode."""
        if self._features is None:
            if self.frozen and self.frozen_features is not None:
                self._features = self.frozen_features().float()
            else:
                self._features = compute_features(self.model, self.x, self.batch_size, self.channels_last)
        return self._features

    def class_mean_features(self):
        """Features of the per-class mean meta inputs ``(K', d)`` (the reference code's targets),
        one row per class with a meta example, in class order (``K' = K`` for a full meta set)."""
        if self._mean_features is None:
            present = torch.unique(self.y)
            remap = torch.searchsorted(present, self.y)
            means = class_means(self.x, remap, present.numel()).to(self.x.dtype)
            self._mean_features = compute_features(self.model, means, self.batch_size, self.channels_last)
        return self._mean_features

    def logits(self):
        """Meta logits with gradients to the trainable parameters."""
        if self.frozen:
            return self.model.classifier(self.features())
        return self.model(layout(self.x, self.channels_last))


__all__ = ["MetaSet"]
