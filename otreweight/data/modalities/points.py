r"""The ``points`` modality: point clouds ``(N, P, D)`` (``D`` = 2 or 3 coordinates, + 3 normals).

* **Normalisation** (``to_tensor``, per cloud, nothing learned from other clouds): the coordinates
  :math:`p_i` (the first ``min(D, 3)`` columns) are centred on their mean and scaled into the unit
  sphere, :math:`p_i \leftarrow (p_i - \bar p) / \max_j \|p_j - \bar p\|`; normals are left as
  they are. ``data.normalize: false`` keeps the raw coordinates.
* **Training augmentation** (``data.augment: point_cloud``; a batched op on the device, drawing
  every random number from the training loop's seeded CPU generator, so a run is reproducible and
  resumes exactly), in this order, per cloud:

  1. random point drop-out (PointNet++): a ratio :math:`r \sim U(0, \text{drop})`, each point
     dropped with probability :math:`r` and replaced by the cloud's first point (the set is
     unchanged for max pooling, the shape keeps ``P`` points);
  2. rotation by :math:`\theta \sim U(0, 2\pi)` about the up axis (``up_axis``, 3-D clouds only;
     ``rotate: false`` turns it off);
  3. anisotropic scaling, one factor per axis :math:`s_a \sim U(\text{scale}_{lo}, \text{scale}_{hi})`
     (default 0.8 - 1.25); normals follow as :math:`S^{-1} n / \|S^{-1} n\|`;
  4. translation :math:`t_a \sim U(-\text{translate}, \text{translate})` per axis (default 0.2);
  5. jitter :math:`\mathrm{clip}(\sigma \epsilon, -c, c)`, :math:`\epsilon \sim N(0, 1)` per coordinate
     (default :math:`\sigma = 0.01`, :math:`c = 0.05`).

  Evaluation never augments. Options (``data.modality_options``): ``rotate``, ``up_axis``
  (``x`` / ``y`` / ``z``, default ``z``: ModelNet's meshes stand on the ``xy`` plane), ``scale``,
  ``translate``, ``jitter``, ``jitter_clip``, ``drop``.
* **Models** take ``in_dims = D`` (:mod:`otreweight.models.points`); the default is ``pointnet``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..._errors import OTReweightError, is_number
from .base import MODALITIES, Modality

AXES = ("x", "y", "z")


def _number(name: str, value, lo: float = 0.0) -> float:
    if not is_number(value, low=lo):
        raise OTReweightError(f"points option {name} must be a number >= {lo:g}, got {value!r}")
    return float(value)


def normalize_clouds(t: torch.Tensor) -> torch.Tensor:
    """Centre every cloud's coordinates on their mean and scale them into the unit sphere."""
    c = min(t.shape[-1], 3)
    xyz = t[..., :c]
    xyz = xyz - xyz.mean(dim=1, keepdim=True)
    radius = xyz.norm(dim=-1).amax(dim=1).clamp_min(1e-12)
    xyz = xyz / radius[:, None, None]
    return torch.cat([xyz, t[..., c:]], dim=-1) if t.shape[-1] > c else xyz


class PointAugment:
    """The training augmentation of the module docstring, on a ``(B, P, D)`` batch."""

    def __init__(self, rotate: bool = True, up_axis: str = "z", scale=(0.8, 1.25), translate: float = 0.2,
                 jitter: float = 0.01, jitter_clip: float = 0.05, drop: float = 0.875) -> None:
        if not isinstance(rotate, bool):
            raise OTReweightError(f"points option rotate must be true or false, got {rotate!r}")
        if up_axis not in AXES:
            raise OTReweightError(f"points option up_axis must be one of x, y, z, got {up_axis!r}")
        if not isinstance(scale, (list, tuple)) or len(scale) != 2:
            raise OTReweightError(f"points option scale must be [low, high], got {scale!r}")
        lo, hi = _number("scale", scale[0], 1e-6), _number("scale", scale[1], 1e-6)
        if lo > hi:
            raise OTReweightError(f"points option scale must be [low, high] with low <= high, got {list(scale)}")
        self.rotate, self.up = rotate, AXES.index(up_axis)
        self.scale, self.translate = (lo, hi), _number("translate", translate)
        self.jitter, self.jitter_clip = _number("jitter", jitter), _number("jitter_clip", jitter_clip)
        self.drop = _number("drop", drop)
        if self.drop >= 1:
            raise OTReweightError(f"points option drop must be below 1 (the largest drop-out ratio), got {drop!r}")

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, p, d = x.shape
        c = min(d, 3)
        dev = x.device
        xyz, nrm = x[..., :c], x[..., c:] if d >= c + 3 else None
        if self.drop > 0:
            ratio = torch.rand(b, 1, generator=gen) * self.drop
            dropped = (torch.rand(b, p, generator=gen) < ratio).to(dev)
            xyz = torch.where(dropped[..., None], xyz[:, :1], xyz)
            if nrm is not None:
                nrm = torch.where(dropped[..., None], nrm[:, :1], nrm)
        if self.rotate and c == 3:
            theta = torch.rand(b, generator=gen) * (2 * math.pi)
            cos, sin = torch.cos(theta), torch.sin(theta)
            i, j = [a for a in range(3) if a != self.up]
            rot = torch.zeros(b, 3, 3)
            rot[:, self.up, self.up] = 1
            rot[:, i, i], rot[:, i, j], rot[:, j, i], rot[:, j, j] = cos, -sin, sin, cos
            rot = rot.to(dev, x.dtype)
            xyz = xyz @ rot.transpose(1, 2)
            if nrm is not None:
                nrm = nrm @ rot.transpose(1, 2)
        lo, hi = self.scale
        s = (lo + (hi - lo) * torch.rand(b, 1, c, generator=gen)).to(dev, x.dtype)
        xyz = xyz * s
        if nrm is not None:
            nrm = nrm / s
            nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if self.translate > 0:
            xyz = xyz + ((torch.rand(b, 1, c, generator=gen) * 2 - 1) * self.translate).to(dev, x.dtype)
        if self.jitter > 0:
            noise = (torch.randn(b, p, c, generator=gen) * self.jitter).clamp_(-self.jitter_clip, self.jitter_clip)
            xyz = xyz + noise.to(dev, x.dtype)
        parts = [xyz] + ([nrm] if nrm is not None else []) + ([x[..., c + 3:]] if d > c + 3 else [])
        return torch.cat(parts, dim=-1) if len(parts) > 1 else xyz


@MODALITIES.register("points")
class PointsModality(Modality):
    """Point clouds ``(N, P, D)`` -> float32 ``(N, P, D)``, each cloud in the unit sphere.

    Parameters
    ----------
    **augment_options
        Options of the ``point_cloud`` augmentation: ``rotate`` (about the up axis, true), ``up_axis`` (z), ``scale`` ([0.8, 1.25], per axis), ``translate`` (0.2), ``jitter`` (0.01) clipped at ``jitter_clip`` (0.05), ``drop`` (largest point drop-out ratio, 0.875).
    """

    name = "points"
    default_model = "pointnet"
    model_input = "in_dims"
    augments = ("point_cloud",)
    noun = "point clouds"

    def __init__(self, **augment_options) -> None:
        known = {"rotate", "up_axis", "scale", "translate", "jitter", "jitter_clip", "drop"}
        unknown = sorted(set(augment_options) - known)
        if unknown:
            raise OTReweightError(f"the points modality does not take {', '.join(unknown)}; its options are "
                                  f"{', '.join(sorted(known))}")
        self.augment_options = augment_options
        PointAugment(**augment_options)  # options checked before any work

    def check(self, x, what: str = "inputs") -> None:
        arr = x if isinstance(x, (np.ndarray, torch.Tensor)) else np.asarray(x)
        if getattr(arr, "ndim", None) != 3 or arr.shape[-1] < 2:
            raise OTReweightError(f"this model expects point clouds (N, P, D) with D >= 2 coordinates, got an array "
                                  f"of shape {tuple(np.shape(arr))}")
        if not (arr.dtype.kind == "f" if isinstance(arr, np.ndarray) else arr.is_floating_point()):
            raise OTReweightError(f"point clouds must be floats, got {arr.dtype}")

    def stats(self, x_train, normalize: bool = True) -> dict:
        self.check(x_train)
        x = np.asarray(x_train)
        if not np.isfinite(x).all():
            raise OTReweightError("the training point clouds hold NaN or inf coordinates; fix or remove those shapes")
        return {"dims": int(x.shape[-1]), "normalize": bool(normalize)}

    def stats_from_chunks(self, chunks, normalize: bool = True) -> dict:
        dims = None
        for c in chunks:
            dims = self.stats(c, normalize)["dims"]
        if dims is None:
            raise OTReweightError("the training split is empty; it needs at least one point cloud")
        return {"dims": dims, "normalize": bool(normalize)}

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:
        self.check(x)
        t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
        return normalize_clouds(t) if stats.get("normalize", True) else t

    def augment(self, data_cfg, stats: dict):
        if data_cfg.augment == "none":
            return None
        if data_cfg.augment not in self.augments:
            raise OTReweightError(f"data.augment {data_cfg.augment!r} is not an augmentation of point clouds; set "
                                  f"data.augment: {self.augments[0]} (or none)")
        opts = dict(self.augment_options)
        if stats.get("dims", 3) < 3:
            opts.setdefault("rotate", False)
        return PointAugment(**opts)

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        return {"in_dims": int(example_shape[-1])}

    def example_batch(self, n: int, rng: np.random.Generator):
        return rng.normal(0, 2, (n, 32, 3)).astype(np.float32)


__all__ = ["PointAugment", "PointsModality", "normalize_clouds"]
