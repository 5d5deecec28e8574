r"""Meta targets: the support of the balanced distribution the weighted training set is moved to.

Given meta features :math:`g_j` with labels :math:`y'_j` (a small balanced set, e.g. 10 per class):

* ``"prototype"`` (default): one target per class, :math:`\bar g_c = \frac{1}{|M_c|}\sum_{j: y'_j=c} g_j`,
  the mean of that class's meta *features* (the paper's text);
* ``"prototype_image"``: one target per class, the features of the pixel-wise mean meta *input* of
  that class (what the authors' code does); the caller supplies the features of those mean inputs;
* ``"whole"``: every meta example is a target.

The targets carry uniform mass :math:`1/m` in the OT problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._errors import OTReweightError, check_choice

TARGET_KINDS = ("prototype", "prototype_image", "whole")


@dataclass
class MetaTargets:
    """Meta targets: ``features`` ``(m, d)`` and their class ``labels`` ``(m,)``."""

    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    _unit: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def unit_features(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The target features scaled to unit rows, detached, in ``dtype`` (the features' own
        floating dtype by default; integer or half features give float32).

        Computed once and kept while ``features`` is the same, unchanged tensor: the per-batch
        cost against thousands of targets (or tens of thousands with ``"whole"``) then costs one
        matrix product, not a normalisation (and a copy) of every target per batch.
        """
        feats = self.features.detach()
        if dtype is None:
            dtype = feats.dtype if feats.dtype in (torch.float32, torch.float64) else torch.float32
        c = self._unit
        if c is None or c[0] is not self.features or c[1] != self.features._version or c[2] != dtype:
            unit = F.normalize(feats.to(dtype), dim=1, eps=1e-12)
            self._unit = c = (self.features, self.features._version, dtype, unit)
        return c[3]


def check_meta_classes(meta_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return per-class meta counts; raise if any class has no meta example."""
    counts = torch.bincount(meta_labels.long().cpu(), minlength=num_classes)
    missing = (counts[:num_classes] == 0).nonzero().flatten().tolist()
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise OTReweightError(
            f"the meta set has no example of class(es) {shown}; give at least one meta example per class"
        )
    return counts


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of the rows of ``x`` per class, shape ``(K, *x.shape[1:])``; every class must occur."""
    counts = check_meta_classes(labels, num_classes).to(x.device)
    flat = x.reshape(x.shape[0], -1)
    flat = flat if flat.is_floating_point() else flat.to(torch.float32)
    sums = torch.zeros(num_classes, flat.shape[1], device=x.device, dtype=flat.dtype)
    sums.index_add_(0, labels.long().to(x.device), flat)
    means = sums / counts.to(flat.dtype).unsqueeze(1)
    return means.reshape(num_classes, *x.shape[1:])


def build_targets(
    kind: str,
    meta_features: torch.Tensor,
    meta_labels: torch.Tensor,
    num_classes: int,
) -> MetaTargets:
    """Meta targets of the given kind from meta features.

    For ``"prototype_image"`` pass as ``meta_features`` the features of the per-class mean
    inputs (``K`` rows, in class order), e.g. ``backbone(class_means(meta_x, meta_y, K))``.
    """
    check_choice("meta target kind", kind, TARGET_KINDS)
    meta_labels = meta_labels.long().to(meta_features.device)
    if kind == "whole":
        check_meta_classes(meta_labels, num_classes)
        return MetaTargets(meta_features, meta_labels, num_classes)
    if kind == "prototype":
        protos = class_means(meta_features, meta_labels, num_classes)
        return MetaTargets(protos, torch.arange(num_classes, device=meta_features.device), num_classes)
    if meta_features.shape[0] != num_classes:
        raise OTReweightError(
            f"prototype_image targets need one feature row per class ({num_classes}), got "
            f"{meta_features.shape[0]}; pass backbone(class_means(meta_x, meta_y, K))"
        )
    return MetaTargets(meta_features, torch.arange(num_classes, device=meta_features.device), num_classes)
