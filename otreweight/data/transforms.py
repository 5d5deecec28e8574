"""Image preprocessing and augmentation as batched tensor ops on the training device (no torchvision).

Images enter as ``uint8`` arrays ``(N, H, W, C)``; :func:`to_tensor_images` turns them once into
normalised ``float32`` ``(N, C, H, W)`` tensors. :class:`PadCropFlip` is the CIFAR augmentation:
pad every side by ``pad`` pixels with black (the value a zero pixel takes after normalisation),
crop a random ``H x W`` window per image, flip half of the images horizontally.
"""
from __future__ import annotations

import numpy as np
import torch

from .._errors import OTReweightError


def channel_stats(x_uint8: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``(N, H, W, C)`` uint8 images, in [0, 1] units."""
    x = np.asarray(x_uint8)
    if x.ndim != 4:
        raise OTReweightError(f"images must have shape (N, H, W, C), got {x.shape}")
    mean = np.zeros(x.shape[-1])
    sq = np.zeros(x.shape[-1])
    for i in range(0, x.shape[0], 4096):  # chunked: no float copy of the whole set
        chunk = x[i : i + 4096].astype(np.float64) / 255.0
        mean += chunk.sum(axis=(0, 1, 2))
        sq += (chunk**2).sum(axis=(0, 1, 2))
    count = x.shape[0] * x.shape[1] * x.shape[2]
    mean /= count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def to_tensor_images(x_uint8: np.ndarray, mean, std, device="cpu") -> torch.Tensor:
    """``(N, H, W, C)`` uint8 -> normalised ``(N, C, H, W)`` float32 on ``device``."""
    t = torch.as_tensor(np.ascontiguousarray(x_uint8), device=device)
    return normalize_chw(t.permute(0, 3, 1, 2), mean, std).contiguous()


class PadCropFlip:
    """Random ``pad``-pixel translation (pad + crop) and horizontal flip of a ``(B, C, H, W)`` batch.

    ``fill`` is the per-channel value of padded pixels (``-mean / std`` = black after normalisation).
    Random numbers come from the CPU generator handed in by the training loop, so runs are
    reproducible and resumable on any device.
    """

    def __init__(self, pad: int = 4, flip: bool = True, fill=None) -> None:
        self.pad, self.flip = int(pad), bool(flip)
        self.fill = None if fill is None else torch.as_tensor(fill, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.pad
        if p > 0:
            padded = x.new_empty(b, c, h + 2 * p, w + 2 * p)
            padded.copy_((self.fill.to(x.device) if self.fill is not None else x.new_zeros(1, c, 1, 1)).expand_as(padded))
            padded[:, :, p : p + h, p : p + w] = x
            oy = torch.randint(0, 2 * p + 1, (b,), generator=gen).to(x.device)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=gen).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            chans = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[torch.arange(b, device=x.device)[:, None, None, None], chans, rows, cols]
        if self.flip:
            mask = (torch.rand(b, generator=gen) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(mask, x.flip(3), x)
        return x


# ----------------------------------------------------------------------------- large images, in the workers
#: ImageNet's per-channel mean and std (``data.normalize: imagenet``), in [0, 1] units
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _v2():
    try:
        from torchvision.transforms import v2
    except ImportError:
        raise OTReweightError("data.augment: random_resized_crop and data.crop_size need torchvision: "
                              "pip install 'otreweight[vision]' (or pip install torchvision)") from None
    return v2


class WorkerTransforms:
    """Per-example image transforms run in the stream loader's worker processes (torchvision v2).

    ``eval``: ``Resize(resize)`` (shorter side) then ``CenterCrop(crop)`` - every image, every split,
    unless it is a training batch; ``train`` (``None``: no augmentation): ``RandomResizedCrop(crop,
    scale)``, a horizontal flip with probability 1/2 and, when ``jitter > 0``, ``ColorJitter(jitter,
    jitter, jitter)``. ``(H, W, C)`` uint8 in, ``(C, crop, crop)`` uint8 out; batches travel to the
    device as uint8 and are normalised there (:func:`normalize_chw`). A training draw is seeded per
    example (``seed``, from the loop's generator), so the augmentation is the same whatever the
    number of workers, and a resumed run repeats it.
    """

    def __init__(self, crop: int = 224, resize: int | None = None, augment: bool = False,
                 scale: tuple = (0.08, 1.0), jitter: float = 0.0, flip: bool = True) -> None:
        v2 = _v2()
        self.crop = int(crop)
        self.resize = int(resize) if resize else int(round(self.crop / 0.875))
        self.eval = v2.Compose([v2.Resize(self.resize, antialias=True), v2.CenterCrop(self.crop)])
        self.train = None
        if augment:
            steps = [v2.RandomResizedCrop(self.crop, scale=tuple(float(s) for s in scale), antialias=True)]
            if flip:
                steps.append(v2.RandomHorizontalFlip())
            if jitter > 0:
                steps.append(v2.ColorJitter(jitter, jitter, jitter))
            self.train = v2.Compose(steps)

    def __call__(self, img: np.ndarray, seed: int | None = None) -> torch.Tensor:
        img = np.ascontiguousarray(img)
        t = torch.from_numpy(img if img.flags.writeable else img.copy()).permute(2, 0, 1)
        if seed is None or self.train is None:
            return self.eval(t).contiguous()
        with torch.random.fork_rng(devices=[]):  # the worker's (or main process's) own stream is left as it was
            torch.manual_seed(int(seed))
            return self.train(t).contiguous()

    def __repr__(self) -> str:
        return f"WorkerTransforms(crop={self.crop}, resize={self.resize}, train={self.train is not None})"


def normalize_chw(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """``(N, C, H, W)`` uint8 -> normalised float32 on its device (after :class:`WorkerTransforms`, once
    the uint8 batch is on the training device)."""
    t = x_uint8.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32, device=t.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=t.device).view(1, -1, 1, 1)
    return t.sub_(m).div_(s)
