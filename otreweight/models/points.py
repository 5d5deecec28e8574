r"""Point-cloud models over ``(B, P, D)`` clouds (the ``points`` modality): PointNet and DGCNN.

``pointnet`` (Qi et al., CVPR 2017): a shared MLP applied to every point,
:math:`h_i = \mathrm{MLP}(p_i)` with widths 64-64-64-128-1024 (1x1 convolutions, batch norm,
ReLU), then max pooling over the points, :math:`f = \max_i h_i \in \mathbb{R}^{1024}`: the
features (what OT transports), and the linear classifier over them. The output is invariant to the
order of the points. Optional, as in the paper: an input transform (a T-Net predicting a
``c x c`` matrix applied to the ``c = min(D, 3)`` coordinates, and to the normals) and a feature
transform (a 64 x 64 matrix after the second layer); both start at the identity. The paper's
orthogonality penalty on the feature transform is not added (the loss is the method's).

``dgcnn`` (Wang et al., TOG 2019): four EdgeConv layers (64, 64, 128, 256). EdgeConv builds the
``k``-nearest-neighbour graph of its input (coordinates for the first layer, the previous layer's
features after that: a dynamic graph; ``k = 20``) and computes
:math:`x'_i = \max_{j \in N(i)} \mathrm{MLP}([x_j - x_i, x_i])`; the four outputs are concatenated,
mapped to ``emb_dims`` (1024) by a shared linear layer, and max- and mean-pooled over the points:
features of width ``2 emb_dims``, then the linear classifier.
"""
from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .base import FeatureClassifier


def _mlp1d(widths, in_dims: int) -> nn.Sequential:
    layers, prev = [], in_dims
    for w in widths:
        layers += [nn.Conv1d(prev, w, 1, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
        prev = w
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a ``k x k`` transform from a ``(B, k', P)`` cloud: shared MLP 64-128-1024, max pool,
    FC 512-256-``k^2``, plus the identity (the last layer starts at zero, so the transform at start
    is the identity)."""

    def __init__(self, in_dims: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.point_mlp = _mlp1d((64, 128, 1024), in_dims)
        self.fc = nn.Sequential(nn.Linear(1024, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                nn.Linear(512, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
                                nn.Linear(256, k * k))
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.point_mlp(x).amax(dim=2)
        eye = torch.eye(self.k, device=x.device, dtype=x.dtype)
        return self.fc(g).view(-1, self.k, self.k) + eye


class PointNet(FeatureClassifier):
    def __init__(self, num_classes: int, in_dims: int = 3, widths=(64, 64, 64, 128, 1024),
                 input_transform: bool = False, feature_transform: bool = False) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 3:
            raise ValueError("pointnet widths need at least three layers")
        self.in_dims, self.coords = int(in_dims), min(int(in_dims), 3)
        self.input_tnet = TNet(self.in_dims, self.coords) if input_transform else None
        self.head_mlp = _mlp1d(widths[:2], self.in_dims)
        self.feature_tnet = TNet(widths[1], widths[1]) if feature_transform else None
        self.tail_mlp = _mlp1d(widths[2:], widths[1])
        self.classifier = nn.Linear(widths[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, D, P)
        if self.input_tnet is not None:
            t = self.input_tnet(h)  # (B, c, c), applied to the coordinates and to the normals
            c = self.coords
            parts = [torch.bmm(t.transpose(1, 2), h[:, :c])]
            if self.in_dims >= 2 * c:
                parts.append(torch.bmm(t.transpose(1, 2), h[:, c: 2 * c]))
            if self.in_dims > len(parts) * c:
                parts.append(h[:, len(parts) * c:])
            h = torch.cat(parts, dim=1)
        h = self.head_mlp(h)
        if self.feature_tnet is not None:
            h = torch.bmm(self.feature_tnet(h).transpose(1, 2), h)
        return self.tail_mlp(h).amax(dim=2)


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, P, k)`` of the ``k`` nearest points (itself included) of every point of ``x``
    ``(B, C, P)`` in squared Euclidean distance."""
    sq = (x * x).sum(dim=1)
    neg_dist = 2 * torch.bmm(x.transpose(1, 2), x) - sq[:, :, None] - sq[:, None, :]
    return neg_dist.topk(k, dim=-1).indices


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[x_j - x_i, x_i]`` for the ``k`` neighbours ``j`` of every point ``i``: ``(B, 2C, P, k)``."""
    b, c, p = x.shape
    idx = knn(x, k)  # (B, P, k)
    pts = x.transpose(1, 2)  # (B, P, C)
    nb = torch.gather(pts, 1, idx.reshape(b, p * k, 1).expand(-1, -1, c)).view(b, p, k, c)
    centre = pts[:, :, None, :].expand(-1, -1, k, -1)
    return torch.cat([nb - centre, centre], dim=-1).permute(0, 3, 1, 2).contiguous()


class EdgeConv(nn.Module):
    def __init__(self, in_dims: int, out_dims: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Conv2d(2 * in_dims, out_dims, 1, bias=False), nn.BatchNorm2d(out_dims),
                                 nn.LeakyReLU(0.2, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(edge_features(x, min(self.k, x.shape[2]))).amax(dim=-1)


class DGCNN(FeatureClassifier):
    def __init__(self, num_classes: int, in_dims: int = 3, k: int = 20, widths=(64, 64, 128, 256),
                 emb_dims: int = 1024) -> None:
        super().__init__()
        self.k, prev = int(k), int(in_dims)
        convs = []
        for w in widths:
            convs.append(EdgeConv(prev, int(w), self.k))
            prev = int(w)
        self.convs = nn.ModuleList(convs)
        self.embed = nn.Sequential(nn.Conv1d(sum(int(w) for w in widths), emb_dims, 1, bias=False),
                                   nn.BatchNorm1d(emb_dims), nn.LeakyReLU(0.2, inplace=True))
        self.classifier = nn.Linear(2 * emb_dims, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h, outs = x.transpose(1, 2).contiguous(), []
        for conv in self.convs:
            h = conv(h)
            outs.append(h)
        e = self.embed(torch.cat(outs, dim=1))
        return torch.cat([e.amax(dim=2), e.mean(dim=2)], dim=1)


@MODELS.register("pointnet")
def pointnet(num_classes: int, in_dims: int, widths=(64, 64, 64, 128, 1024), input_transform: bool = False,
             feature_transform: bool = False) -> PointNet:
    """PointNet: shared per-point MLP, max pooling (1,024-d features), linear classifier.

    Parameters
    ----------
    widths : list of int
        Widths of the shared per-point MLP; the last is the pooled feature width.
    input_transform : bool
        Learn a spatial transformer (T-Net) that aligns the input points.
    feature_transform : bool
        Learn a T-Net that aligns the per-point features after the second layer.
    """
    return PointNet(num_classes, in_dims, widths, input_transform, feature_transform)


@MODELS.register("dgcnn")
def dgcnn(num_classes: int, in_dims: int, k: int = 20, widths=(64, 64, 128, 256), emb_dims: int = 1024) -> DGCNN:
    """DGCNN: four EdgeConv layers on a dynamic k-NN graph, max + mean pooling, linear classifier.

    Parameters
    ----------
    k : int
        Neighbours of each point in the k-NN graph, rebuilt in every EdgeConv layer.
    widths : list of int
        Output widths of the EdgeConv layers.
    emb_dims : int
        Width of the embedding before pooling; the features are ``2 * emb_dims``-d (max and mean).
    """
    return DGCNN(num_classes, in_dims, k, widths, emb_dims)


def _example_input(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 32, 3, generator=g)


for _factory in (pointnet, dgcnn):
    _factory.example_input = _example_input
    _factory.example_kwargs = {"in_dims": 3}
