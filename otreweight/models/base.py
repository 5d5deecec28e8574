"""The model contract: backbone features, then a linear classifier."""
from __future__ import annotations

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """Base class: subclasses set ``self.classifier`` (an ``nn.Linear``) and implement :meth:`features`.

    ``forward(x) = classifier(features(x))``. ``feature_dim`` is the width of ``features(x)``.
    """

    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def backbone_parameters(self):
        """Every parameter outside the classifier."""
        head = {id(p) for p in self.classifier.parameters()}
        return [p for p in self.parameters() if id(p) not in head]
