"""Modalities: what kind of inputs a dataset holds, and everything that depends on it, in one place.

A :class:`Modality` owns, for its kind of input,

* ``check(x)`` - the raw array shape / dtype it accepts (one-line error otherwise);
* ``stats(x_train, normalize)`` - normalisation statistics from the training split only;
* ``to_tensor(x, stats, device)`` - raw examples -> the model's float input (normalised), used once
  for data held on the device and per batch in the loader workers of the stream path
  (``collate``);
* ``augment(data_cfg, stats)`` - the training augmentation, a batched op on the device driven by
  the loop's seeded generator (``None``: none);
* ``model_kwargs(example_shape)`` - what a model factory needs to know (``in_channels``,
  ``in_features``); ``default_model``; ``channels_last`` for conv nets.

Registered now: ``image`` (uint8 ``(N, H, W, C)``, per-channel mean / std, pad-crop-flip) and
``vector`` (numeric ``(N, D)``, per-feature standardisation, no augmentation). A new modality
(token ids, point clouds) registers itself with ``@MODALITIES.register("name")`` and is used by
the loop, the loaders and ``evaluate`` without touching them; a source declares its modality.
Also registered: ``tokens`` (:mod:`~otreweight.data.text`) and ``points``
(:mod:`~otreweight.data.points`).
"""
from __future__ import annotations

import numpy as np
import torch

from .._errors import OTReweightError
from ..registry import Registry
from .transforms import IMAGENET_MEAN, IMAGENET_STD, PadCropFlip, WorkerTransforms, channel_stats, normalize_chw, \
    to_tensor_images


class Modality:
    """Base class: see the module docstring for the contract."""

    name = "modality"
    default_model = "mlp"
    channels_last = False
    augment_kind = "pad_crop_flip"  # the data.augment value that turns this modality's augmentation on

    def check(self, x, what: str = "inputs") -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stats(self, x_train, normalize: bool = True) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def stats_from_chunks(self, chunks, normalize: bool = True) -> dict:
        """:meth:`stats` of a split read in chunks of raw examples (lazy data; one pass)."""
        return self.stats(np.concatenate(list(chunks)), normalize)

    def collate(self, items: list, stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A list of ``(raw example, label)`` -> ``(inputs, labels)`` on the CPU (loader workers)."""
        x = np.stack([np.asarray(a) for a, _ in items])
        y = torch.as_tensor(np.asarray([int(b) for _, b in items], dtype=np.int64))
        return self.to_tensor(x, stats, "cpu"), y

    def augment(self, data_cfg, stats: dict):
        return None

    def on_device(self, x: torch.Tensor, stats: dict) -> torch.Tensor:
        """What is left to do to a collated batch once it is on the device (default: nothing)."""
        return x

    def worker_transforms(self, data_cfg=None):
        """Per-example transforms the stream loader's workers apply (``None``: none; see
        :class:`~otreweight.data.transforms.WorkerTransforms`)."""
        return None

    def bytes_per_example(self, example_shape: tuple) -> int:
        """Bytes one example takes on the device once converted (float32 of its raw shape)."""
        return int(np.prod(example_shape)) * 4

    def example_batch(self, n: int, rng: np.random.Generator):  # pragma: no cover - abstract
        """``n`` random raw examples as the modality's sources give them (for conformance checks)."""
        raise NotImplementedError

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


MODALITIES: Registry[Modality] = Registry("modality")


@MODALITIES.register("image")
class ImageModality(Modality):
    """uint8 images ``(N, H, W, C)`` -> normalised float ``(N, C, H, W)``; CIFAR pad-crop-flip on the
    device, or (``crop_size`` set) ImageNet-style transforms in the loader workers: resize the shorter
    side to ``resize_size`` and centre-crop ``crop_size`` for evaluation, random-resized crops for
    training (``data.augment: random_resized_crop``).

    Parameters
    ----------
    crop_size : int or None
        Side of the square crop of ImageNet-style transforms (``data.crop_size``; null: no resize or crop).
    resize_size : int or None
        Shorter side after resizing, before the evaluation centre crop (``data.resize_size``; null: ``crop_size / 0.875``).
    """

    name = "image"
    default_model = "resnet32"
    channels_last = True

    def __init__(self, crop_size: int | None = None, resize_size: int | None = None) -> None:
        self.crop_size = int(crop_size) if crop_size else None
        self.resize_size = int(resize_size) if resize_size else None

    def check(self, x, what: str = "inputs") -> None:
        if getattr(x, "ndim", None) != 4:
            raise OTReweightError(f"this model expects images (N, H, W, C), got an array of shape {np.shape(x)}")

    def stats(self, x_train, normalize: bool | str = True) -> dict:
        self.check(x_train)
        if normalize == "imagenet":
            return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        if normalize:
            mean, std = channel_stats(x_train)
        else:
            mean, std = [0.0] * x_train.shape[-1], [1.0 / 255.0] * x_train.shape[-1]
        return {"mean": mean, "std": std}

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:
        self.check(x)
        return to_tensor_images(x, stats["mean"], stats["std"], device)

    def stats_from_chunks(self, chunks, normalize: bool | str = True) -> dict:
        """Per-channel mean / std from running sums over uint8 chunks (no copy of the split)."""
        if normalize == "imagenet":
            return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        if not normalize:  # decoded files are RGB
            return {"mean": [0.0] * 3, "std": [1.0 / 255.0] * 3}
        total = sq = None
        count = 0
        for chunk in chunks:
            c = np.asarray(chunk, dtype=np.float64) / 255.0
            s1, s2 = c.sum(axis=(0, 1, 2)), (c**2).sum(axis=(0, 1, 2))
            total, sq = (s1, s2) if total is None else (total + s1, sq + s2)
            count += c.shape[0] * c.shape[1] * c.shape[2]
        if total is None:
            raise OTReweightError("the training split is empty; it needs at least one image")
        mean = total / count
        return {"mean": mean.tolist(), "std": np.sqrt(np.maximum(sq / count - mean**2, 1e-12)).tolist()}

    def augment(self, data_cfg, stats: dict):
        if data_cfg.augment != "pad_crop_flip":
            return None
        fill = [-m / s for m, s in zip(stats["mean"], stats["std"])]
        return PadCropFlip(pad=data_cfg.pad, flip=data_cfg.flip, fill=fill)

    def worker_transforms(self, data_cfg=None):
        if self.crop_size is None:
            return None
        train = data_cfg is not None and data_cfg.augment == "random_resized_crop"
        return WorkerTransforms(self.crop_size, self.resize_size, augment=train,
                                scale=tuple(data_cfg.crop_scale) if train else (0.08, 1.0),
                                jitter=data_cfg.color_jitter if train else 0.0,
                                flip=data_cfg.flip if train else True)

    def collate(self, items: list, stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw arrays: normalised here (in the worker). Transformed ``(C, H, W)`` uint8 tensors: stacked
        as uint8 (a quarter of the bytes through shared memory, pinning and the copy to the device)
        and normalised on the device by :meth:`on_device`."""
        if not items or not isinstance(items[0][0], torch.Tensor):
            return super().collate(items, stats)
        y = torch.as_tensor(np.asarray([int(b) for _, b in items], dtype=np.int64))
        return torch.stack([a for a, _ in items]), y

    def on_device(self, x: torch.Tensor, stats: dict) -> torch.Tensor:
        return normalize_chw(x, stats["mean"], stats["std"]) if x.dtype == torch.uint8 else x

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        return {"in_channels": int(example_shape[-1])}

    def example_batch(self, n: int, rng: np.random.Generator):
        return rng.integers(0, 256, (n, 16, 16, 3)).astype(np.uint8)


# float32 arithmetic on larger values overflows: centring (x - mean) beyond float32's maximum, and a raw
# feature whose square does in the first layer's products and the loss
_F32_MAX, _RAW_LIMIT = float(np.finfo(np.float32).max), 1e18


def _check_range(x: np.ndarray, mean: np.ndarray, normalize) -> None:
    """Refuse training features the model's float32 arithmetic would turn into inf / NaN."""
    if not x.size:
        return
    span = np.abs(x - mean).max(0) if normalize else np.abs(x).max(0)
    col = int(np.argmax(span))
    if span[col] >= (_F32_MAX if normalize else _RAW_LIMIT):
        how = ("centring them (x - mean) overflows float32" if normalize else
               "float32 products of such values overflow (set data.normalize: true)")
        raise OTReweightError(f"feature column {col} of the training data reaches {float(np.abs(x[:, col]).max()):.3g} "
                              f"(float32's maximum is {_F32_MAX:.3g}): {how}; rescale the features before training")


@MODALITIES.register("vector")
class VectorModality(Modality):
    """Numeric features ``(N, D)`` -> float32, standardised per feature with training statistics."""

    name = "vector"
    default_model = "mlp"

    def check(self, x, what: str = "inputs") -> None:
        if getattr(x, "ndim", None) != 2:
            raise OTReweightError(f"this model expects feature vectors (N, D), got an array of shape {np.shape(x)}")

    def stats(self, x_train, normalize: bool = True) -> dict:
        self.check(x_train)
        x = np.asarray(x_train, dtype=np.float64)
        d = x.shape[1]
        mean = x.mean(0).tolist() if normalize else [0.0] * d
        std = np.maximum(x.std(0), 1e-8).tolist() if normalize else [1.0] * d
        _check_range(x, np.asarray(mean), normalize)
        return {"mean": mean, "std": std}

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:
        self.check(x)
        t = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
        m = torch.as_tensor(stats["mean"], dtype=torch.float32, device=device)
        s = torch.as_tensor(stats["std"], dtype=torch.float32, device=device)
        return (t - m) / s

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        return {"in_features": int(example_shape[-1])}

    def example_batch(self, n: int, rng: np.random.Generator):
        return rng.normal(0, 2, (n, 7)).astype(np.float32)


def get_modality(name: str, **options) -> Modality:
    """The registered modality ``name`` (a fresh instance with ``options``, e.g. ``max_length``)."""
    return MODALITIES.create(name, **options)


def infer_modality(x) -> str:
    """The modality of raw arrays or tensors handed to the Python API without one: ``image`` for
    4-d inputs, ``vector`` otherwise (sources declare theirs; this is the API's only guess)."""
    return "image" if getattr(x, "ndim", 0) == 4 else "vector"


__all__ = ["MODALITIES", "ImageModality", "Modality", "VectorModality", "get_modality", "infer_modality"]


from . import text as _text  # noqa: E402,F401  (registers the tokens modality)
from . import points as _points  # noqa: E402,F401  (registers the points modality)
