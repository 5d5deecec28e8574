"""Former home of the modalities, kept for imports written against it: see :mod:`otreweight.data.modalities`."""
from .modalities import MODALITIES, ImageModality, Modality, VectorModality, get_modality, infer_modality

__all__ = ["MODALITIES", "ImageModality", "Modality", "VectorModality", "get_modality", "infer_modality"]
