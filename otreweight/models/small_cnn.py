"""A small convolutional network for quick runs on images of any size."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import MODELS
from .base import FeatureClassifier


class SmallCNN(FeatureClassifier):
    """Three 3x3 conv-BN-ReLU stages (``width``, 2x, 4x channels; stride 2 in the last two), global
    average pooling (``4 * width``-d features), a linear classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, 1 if i == 0 else 2, 1, bias=False) for i in range(3)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in chans[1:])
        self.classifier = nn.Linear(chans[-1], num_classes)

    def features(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = F.relu(bn(conv(x)))
        return x.mean(dim=(2, 3))


@MODELS.register("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3, width: int = 32) -> SmallCNN:
    """Three conv-BN-ReLU stages and global average pooling: a quick network for images of any size.

    Parameters
    ----------
    width : int
        Channels of the first stage (then 2x and 4x); the features are ``4 * width``-d.
    """
    return SmallCNN(num_classes, in_channels, width)
