"""Modalities: what kind of inputs a dataset holds, and everything that depends on it.

``base`` holds the :class:`Modality` contract and the registry ``MODALITIES``; each other module
is one registered modality and imports only ``base``:

``vector``
    Numeric features ``(N, D)``, standardised per feature.
``image``
    uint8 images ``(N, H, W, C)``, per-channel mean / std, pad-crop-flip or ImageNet-style crops.
``tokens``
    Documents as strings, a tokenizer trained on the training split (or a pretrained one).
``points``
    Point clouds ``(N, P, D)``, each in the unit sphere, point-cloud augmentation.

A modality of your own registers with ``@MODALITIES.register("name")`` from any module; sources
name it as their ``modality`` (see ``docs/extending.md``).
"""
from .base import MODALITIES, Modality, augment_names, get_modality, infer_modality, input_kinds
from . import vector, image, tokens, points  # noqa: F401,I001  (each registers its modality, in this order)
from .image import ImageModality
from .points import PointAugment, PointsModality, normalize_clouds
from .tokens import TokensModality, cached_token_ids
from .vector import VectorModality

__all__ = ["MODALITIES", "ImageModality", "Modality", "PointAugment", "PointsModality", "TokensModality",
           "VectorModality", "augment_names", "cached_token_ids", "get_modality", "infer_modality", "input_kinds",
           "normalize_clouds"]
