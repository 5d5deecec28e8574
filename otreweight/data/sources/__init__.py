"""Data sources behind one interface, decoded once and cached.

Every source returns an :class:`ArrayDataset`: a labelled train/test pair of
numpy arrays.  Sources that need decoding (CIFAR pickles, image folders) store
the decoded arrays as an uncompressed ``.npz`` in a cache directory, so the
second load only reads that file.

Sources
-------
``"cifar10"``, ``"cifar100"``
    The official CIFAR python archives (:func:`load_cifar`).
``<path>.npz``
    Arrays saved with :func:`numpy.savez` (:func:`load_npz`).
``<folder>`` or ``<archive>.tar.gz``
    Class-per-folder images, ``train/<class>/*`` and ``test/<class>/*``
    (:func:`load_image_folder`).
``"modelnet"``, ``"modelnet_h5"``, ``"point_folder"``, ``"mnist_points"``
    Point clouds (``data.root`` = their folder): ModelNet ``.off`` trees sampled with trimesh,
    the HDF5 release, point sets in class folders, MNIST digits as 2-D point sets
    (:mod:`~otreweight.data.sources.points`).
``<folder>`` of ``train.tsv`` / ``test.tsv`` (``.csv``, ``.jsonl``) or ``train/<class>/*.txt``
    Text documents (:func:`load_text`).
``"image_list"``
    Images named in train / val / test list files (:mod:`~otreweight.data.sources.image_lists`).

More sources, named or path ones, are added with :func:`register_source`, from any module.

All of them sit in one :class:`~otreweight.registry.Registry`, ``SOURCES``; the
path sources (:func:`path_sources`: ``npz``, ``text``, ``folder``) are chosen by
``"<kind>:<path>"`` or by their sniffers asking about the path, not by their bare name.

Layout
------
``arrays``
    :class:`ArrayDataset`, :class:`ArraySplits`, :class:`DataError` and the array checks (the
    split protocol itself is :mod:`otreweight.data.dataset`).
``cache``
    The cache of decoded arrays (:func:`default_cache_dir`).
``download``
    Downloads, MD5 checks and safe tar extraction.
``cifar``, ``folder``, ``image_lists``, ``npz``, ``points``, ``text``
    One module per source; each registers itself in ``SOURCES``.
``registry``
    ``SOURCES``, :func:`register_source` and :func:`load_dataset` (it imports no source).
"""

from __future__ import annotations

from . import arrays, cache, download, registry  # noqa: F401
from .cache import default_cache_dir  # noqa: F401
from .arrays import ArrayDataset, ArraySplits, DataError  # noqa: F401
from .download import _md5, _safe_extract, _urlretrieve  # noqa: F401
from .registry import SOURCES, load_dataset, path_sources, register_source  # noqa: F401

from . import cifar, folder, image_lists, npz, points, text  # noqa: F401  (each registers its sources)
from .cifar import CIFAR10_MD5, CIFAR10_URL, CIFAR100_MD5, CIFAR100_URL, _decode_cifar, load_cifar  # noqa: F401
from .folder import IMAGE_EXTENSIONS, LazyImageFolder, _decode_image, load_image_folder, open_image_folder  # noqa: F401
from .npz import load_npz  # noqa: F401
from .text import TextDataset, load_text  # noqa: F401
from .points import PointDataset, load_mnist_points, load_modelnet, load_modelnet_h5, load_point_folder  # noqa: F401

__all__ = [
    "ArrayDataset",
    "ArraySplits",
    "DataError",
    "SOURCES",
    "default_cache_dir",
    "load_cifar",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "path_sources",
    "register_source",
]
