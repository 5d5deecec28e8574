"""CIFAR-10 and CIFAR-100 from the official python archives, registered as ``"cifar10"`` and ``"cifar100"``."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import _cache_path, _fingerprint, _read_cache, _resolve_cache_dir, _write_cache
from .arrays import ArrayDataset, DataError
from .download import _md5, _safe_extract, _urlretrieve
from .registry import register_source

__all__ = ["CIFAR10_MD5", "CIFAR10_URL", "CIFAR100_MD5", "CIFAR100_URL", "load_cifar"]

# Official CIFAR archives (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + (self.test_file, self.meta_file)


def _cifar_spec(name: str) -> _CifarSpec:
    # Built at call time so that tests can monkeypatch the URL/MD5 constants.
    if name == "cifar10":
        return _CifarSpec("CIFAR-10", CIFAR10_URL, CIFAR10_MD5, "cifar-10-batches-py",
                          tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                          "batches.meta", "labels", "label_names")
    if name == "cifar100":
        return _CifarSpec("CIFAR-100", CIFAR100_URL, CIFAR100_MD5, "cifar-100-python",
                          ("train",), "test", "meta", "fine_labels", "fine_label_names")
    raise DataError(f"unknown CIFAR variant {name!r}: use 'cifar10' or 'cifar100'")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds what the CIFAR files contain (dicts, lists, arrays)."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR file")
        if module.startswith("numpy.core."):  # files written with numpy 1.x
            module = "numpy._core." + module[len("numpy.core."):]
            try:
                __import__(module)
            except ImportError:  # numpy 1.x itself
                module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)


def _get(d: dict, key: str):
    return d[key.encode()] if key.encode() in d else d[key]


def _read_cifar_pickle(raw: bytes, where: str) -> dict:
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
        if not isinstance(d, dict):
            raise TypeError("not a dict")
        return d
    except Exception as e:
        raise DataError(f"cannot read {where} ({e}): it is not an official CIFAR python file; "
                        "replace it with a fresh copy") from None


def _decode_cifar(read: Callable[[str], bytes], spec: _CifarSpec, where: str):
    """Arrays from the CIFAR pickles; ``read(fname)`` returns a file's bytes."""

    def split(files):
        xs, ys = [], []
        for fname in files:
            d = _read_cifar_pickle(read(fname), f"{where}/{fname}")
            try:
                data = np.asarray(_get(d, "data"), dtype=np.uint8)
                labels = np.asarray(_get(d, spec.label_key), dtype=np.int64)
                xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            except (KeyError, ValueError) as e:
                raise DataError(f"{where}/{fname} lacks CIFAR data or labels ({e}): replace it with a fresh copy") from None
            ys.append(labels)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    x_train, y_train = split(spec.train_files)
    x_test, y_test = split((spec.test_file,))
    meta = _read_cifar_pickle(read(spec.meta_file), f"{where}/{spec.meta_file}")
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, spec.names_key)]
    except KeyError:
        raise DataError(f"{where}/{spec.meta_file} lacks the class names: replace it with a fresh copy") from None
    return x_train, y_train, x_test, y_test, names


def _missing_cifar_message(spec: _CifarSpec, root: Path) -> str:
    return (f"{spec.title} not found: put {spec.archive} (from {spec.url}) into {root}, "
            f"or its extracted folder {spec.folder}/ there")


def _download_cifar(spec: _CifarSpec, root: Path) -> None:
    """Download the archive into ``root``, check its MD5, extract it there."""
    archive = root / spec.archive
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=spec.archive + ".", suffix=".part", dir=root)
        os.close(fd)
    except OSError as e:
        raise DataError(f"{_missing_cifar_message(spec, root)} (cannot write there: {e})") from None
    try:
        try:
            _urlretrieve(spec.url, tmp)
        except OSError as e:  # urllib.error.URLError is an OSError
            reason = getattr(e, "reason", None) or e
            raise DataError(f"{_missing_cifar_message(spec, root)} (download failed: {reason})") from None
        actual = _md5(Path(tmp))
        if actual != spec.md5:
            raise DataError(f"downloaded {spec.archive} has MD5 {actual}, expected {spec.md5}: "
                            f"the file was removed; download it again or put a good copy into {root}")
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _safe_extract(archive, root)


def load_cifar(name: str, root=None, download: bool = True, cache_dir=None) -> ArrayDataset:
    """Load CIFAR-10 or CIFAR-100 from the official python archive.

    Looks in ``root`` for the extracted folder (``cifar-10-batches-py/`` or
    ``cifar-100-python/``), else for the archive (``cifar-10-python.tar.gz`` or
    ``cifar-100-python.tar.gz``, read in place after an MD5 check), else
    downloads the archive into ``root`` and extracts it there.

    Parameters
    ----------
    name : {"cifar10", "cifar100"}
    root : path, optional
        Folder holding the archive or folder; default ``<cache_dir>/datasets``.
    download : bool
        Download the archive when neither archive nor folder is in ``root``.
    cache_dir : path, optional
        Where decoded arrays are cached; default :func:`default_cache_dir`.

    Returns
    -------
    ArrayDataset
        uint8 images ``(N, 32, 32, 3)``, fine labels for CIFAR-100.

    Raises
    ------
    DataError
        Data missing (and not downloadable), damaged, or MD5 mismatch.
    """
    spec = _cifar_spec(name)
    cache = _resolve_cache_dir(cache_dir)
    root = Path(root).expanduser().absolute() if root is not None else (cache / "datasets").absolute()
    folder, archive = root / spec.folder, root / spec.archive

    if not folder.is_dir() and not archive.is_file():
        if not download:
            raise DataError(_missing_cifar_message(spec, root))
        _download_cifar(spec, root)
    if folder.is_dir() and not archive.is_file():
        missing = [f for f in spec.files if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)}: {_missing_cifar_message(spec, root)}")
    use_folder = folder.is_dir() and all((folder / f).is_file() for f in spec.files)

    if use_folder:
        key = [_fingerprint(folder / f) for f in spec.files]
    else:
        key = _fingerprint(archive)
    cpath = _cache_path(cache, name, *key)
    cached = _read_cache(cpath)
    if cached is not None:
        return cached

    if use_folder:
        arrays = _decode_cifar(lambda f: (folder / f).read_bytes(), spec, str(folder))
    else:
        actual = _md5(archive)
        if actual != spec.md5:
            raise DataError(f"{archive} has MD5 {actual}, expected {spec.md5}: the file is damaged or "
                            f"not the official {spec.title} archive; delete it and download it again")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                def read(fname):
                    try:
                        return tar.extractfile(f"{spec.folder}/{fname}").read()
                    except KeyError:
                        raise DataError(f"{archive} lacks {spec.folder}/{fname}: it is not the official "
                                        f"{spec.title} archive") from None
                arrays = _decode_cifar(read, spec, str(archive))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"cannot read {archive} ({e}): the archive is damaged; delete it and fetch it again") from None
    x_train, y_train, x_test, y_test, names = arrays
    try:
        ds = ArrayDataset(x_train, y_train, x_test, y_test, names, name)
    except DataError as e:
        raise DataError(f"{name} in {root}: {e}") from None
    _write_cache(cpath, ds)
    return ds


@register_source("cifar10")
def _cifar10(root=None, download=True, cache_dir=None):
    """CIFAR-10 from the official python archive in ``root`` (downloaded when missing and allowed), decoded once and cached."""
    return load_cifar("cifar10", root, download=download, cache_dir=cache_dir)


@register_source("cifar100")
def _cifar100(root=None, download=True, cache_dir=None):
    """CIFAR-100 from the official python archive in ``root`` (downloaded when missing and allowed), decoded once and cached."""
    return load_cifar("cifar100", root, download=download, cache_dir=cache_dir)

