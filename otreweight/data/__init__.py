"""Data: sources (CIFAR archives, image folders, npz) and long-tailed splits of labelled arrays."""
from .longtail import LongTailSplit, long_tail_counts, make_long_tailed
from .sources import (
    SOURCES,
    ArrayDataset,
    DataError,
    load_cifar,
    load_dataset,
    load_image_folder,
    load_npz,
    register_source,
)

__all__ = [
    "SOURCES",
    "ArrayDataset",
    "DataError",
    "LongTailSplit",
    "load_cifar",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "long_tail_counts",
    "make_long_tailed",
    "register_source",
]
