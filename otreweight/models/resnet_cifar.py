"""ResNet-32 for 32x32 images (He et al., 2016, section 4.2), as used on CIFAR-LT.

A 3x3 convolution with 16 channels, three stages of 5 basic blocks with 16, 32 and 64 channels
(stride 2 at the start of stages 2 and 3), global average pooling (64-d features) and a linear
classifier: about 0.46M parameters. Shortcuts that change shape are parameter-free ("option A":
spatial subsampling and zero-padded channels), as in the paper and the LDAM-DRW code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .base import FeatureClassifier


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(FeatureClassifier):
    """CIFAR ResNet with ``blocks`` basic blocks per stage (5 -> ResNet-32)."""

    def __init__(self, num_classes: int, blocks: int = 5, in_channels: int = 3, widths=(16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, in_planes = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(in_planes, w, 2 if (b == 0 and i > 0) else 1))
                in_planes = w
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return out.mean(dim=(2, 3))


@MODELS.register("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 for 32x32 images (He et al. 2016; the CIFAR-LT papers' network), 64-d features."""
    return CifarResNet(num_classes, blocks=5, in_channels=in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 for 32x32 images, the smaller CIFAR ResNet, 64-d features."""
    return CifarResNet(num_classes, blocks=3, in_channels=in_channels)
