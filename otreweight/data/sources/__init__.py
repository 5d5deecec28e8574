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

More sources can be added by name with :func:`register_source`.

All of them sit in one :class:`~otreweight.registry.Registry`, ``SOURCES``
(``SOURCES.names()``: ``cifar10``, ``cifar100``, ``folder``, ``npz``); the
path kinds in ``PATH_SOURCES`` are chosen by ``"npz:<path>"`` /
``"folder:<path>"`` or by the path, not by their bare name.

Layout
------
``dataset``
    :class:`ArrayDataset`, :class:`DataError` and the array checks.
``cache``
    The cache of decoded arrays (:func:`default_cache_dir`).
``download``
    Downloads, MD5 checks and safe tar extraction.
``cifar``, ``folder``, ``npz``
    One module per source; each registers itself in ``SOURCES``.
``registry``
    ``SOURCES``, :func:`register_source` and :func:`load_dataset`.

Setting a name on this package (``monkeypatch.setattr(sources, "CIFAR10_MD5", ...)``)
also sets it in the submodules that use it, as when this was one module.
"""

from __future__ import annotations

import sys
import types

from . import cache, dataset, download, registry
from .cache import default_cache_dir  # noqa: F401
from .dataset import ArrayDataset, DataError  # noqa: F401
from .download import _md5, _safe_extract, _urlretrieve  # noqa: F401
from .registry import PATH_SOURCES, SOURCES, load_dataset, register_source  # noqa: F401

from . import cifar, folder, image_lists, npz, points, text  # noqa: F401  (each registers its sources)
from .cifar import CIFAR10_MD5, CIFAR10_URL, CIFAR100_MD5, CIFAR100_URL, _decode_cifar, load_cifar  # noqa: F401
from .folder import IMAGE_EXTENSIONS, LazyImageFolder, _decode_image, load_image_folder, open_image_folder  # noqa: F401
from .npz import load_npz  # noqa: F401
from .text import TextDataset, load_text  # noqa: F401
from .points import PointDataset, load_mnist_points, load_modelnet, load_modelnet_h5, load_point_folder  # noqa: F401

__all__ = [
    "ArrayDataset",
    "DataError",
    "SOURCES",
    "default_cache_dir",
    "load_cifar",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "register_source",
]

_SUBMODULES = (dataset, cache, download, registry, cifar, folder, npz)
_MISSING = object()


class _Package(types.ModuleType):
    """This package, with attribute writes passed on to the submodules that hold the same object."""

    def __setattr__(self, name: str, value) -> None:
        old = self.__dict__.get(name, _MISSING)
        if old is not _MISSING and not name.startswith("__"):
            for mod in _SUBMODULES:
                if mod.__dict__.get(name, _MISSING) is old:
                    setattr(mod, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
