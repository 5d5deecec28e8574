"""The ``vector`` modality: numeric features ``(N, D)``, standardised per feature, no augmentation."""
from __future__ import annotations

import numpy as np
import torch

from ..._errors import OTReweightError
from .base import MODALITIES, Modality

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
    model_input = "in_features"
    noun = "feature vectors"

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


__all__ = ["VectorModality"]
