"""A multi-layer perceptron for vectors (tabular data, embeddings, flattened small images)."""
from __future__ import annotations

from torch import nn

from .._errors import OTReweightError
from . import MODELS
from .base import FeatureClassifier


class MLP(FeatureClassifier):
    """``in_features -> hidden[0] -> ... -> hidden[-1] -> num_classes`` with ReLU and batch norm.

    The backbone's output (the last hidden layer, after ReLU) is the feature used by OT.
    """

    def __init__(self, in_features: int, num_classes: int, hidden=(128, 64), dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 2 or not hidden:
            raise OTReweightError(
                f"mlp needs in_features >= 1, num_classes >= 2 and at least one hidden layer; "
                f"got in_features={in_features}, num_classes={num_classes}, hidden={hidden}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.backbone = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x):
        return self.backbone(x)


@MODELS.register("mlp")
def mlp(in_features: int, num_classes: int, hidden=(128, 64), dropout: float = 0.0) -> MLP:
    """Multi-layer perceptron for vectors: linear, batch norm and ReLU per hidden layer, linear classifier.

    Parameters
    ----------
    hidden : list of int
        Widths of the hidden layers; the last one is the feature OT transports.
    dropout : float
        Dropout after each hidden layer (0: none).
    """
    return MLP(in_features, num_classes, tuple(hidden), dropout)
