"""The ``image`` modality: uint8 images ``(N, H, W, C)``, per-channel normalisation, pad-crop-flip on the
device or ImageNet-style crops in the loader workers."""
from __future__ import annotations

import numpy as np
import torch

from ..._errors import OTReweightError
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, PadCropFlip, WorkerTransforms, channel_stats, normalize_chw, \
    to_tensor_images
from .base import MODALITIES, Modality


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
    model_input = "in_channels"
    augments = ("pad_crop_flip", "random_resized_crop")
    normalizations = (True, False, "imagenet")
    takes_crop_size = True
    crop_augments = ("random_resized_crop",)
    noun = "images"

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

    def stats_need_data(self, normalize) -> bool:
        return not (normalize == "imagenet" or not normalize)

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


__all__ = ["ImageModality"]
