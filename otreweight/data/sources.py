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

More sources can be added by name with :func:`register_source`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .._errors import OTReweightError
from ..utils import atomic_write

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

# Official CIFAR archives (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_CACHE_VERSION = "otreweight-arrays-v1"
_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(OTReweightError):
    """A data source is missing, damaged or malformed (one-line message)."""


# --------------------------------------------------------------------------
# The dataset container and its validation
# --------------------------------------------------------------------------


@dataclass
class ArrayDataset:
    """A labelled train/test pair of arrays, as loaded from a source.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        Images as uint8 of shape ``(N, H, W, C)`` (channels last, as stored),
        or features as numbers of shape ``(N, D)``.
    y_train, y_test : np.ndarray
        int64 labels in ``0..K-1``.
    classes : list of str
        Class names; ``classes[k]`` names label ``k``.
    name : str
        Where the data came from, e.g. ``"cifar10"`` or ``"folder:<path>"``.

    Raises
    ------
    DataError
        On construction, when the arrays are inconsistent (see ``validate``).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.validate()

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (``len(classes)``)."""
        return len(self.classes)

    def validate(self) -> None:
        """Check shapes, dtypes and label ranges; labels become int64.

        Raises
        ------
        DataError
            With one line naming the problem and the fix.
        """
        if not self.classes:
            raise DataError("the dataset has no classes: give at least one class name")
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise DataError(f"class names repeat ({', '.join(dup)}): give each class one unique name")
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"))
            y = _check_labels(getattr(self, f"y_{split}"), f"y_{split}", self.num_classes)
            _check_inputs(x, f"x_{split}")
            if len(x) != len(y):
                raise DataError(
                    f"x_{split} has {len(x)} rows but y_{split} has {len(y)}: "
                    "give exactly one label per example"
                )
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
        if len(self.x_train) == 0:
            raise DataError("the training split is empty: the source needs at least one training example")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"x_train examples have shape {self.x_train.shape[1:]} but x_test examples "
                f"{self.x_test.shape[1:]}: both splits need the same example shape"
            )


def _check_labels(y, what: str, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}: labels must be a 1-D array of class indices")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "b" or y.size == 0:
            y = y.astype(np.int64)
        else:
            raise DataError(
                f"{what} has dtype {y.dtype}: labels must be integers 0..K-1 "
                "(convert with .astype(np.int64))"
            )
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(
                f"{what} has label {bad} outside 0..{num_classes - 1} ({num_classes} classes): "
                "labels must be 0..K-1 with K = number of class names"
            )
    return y.astype(np.int64, copy=False)


def _check_inputs(x: np.ndarray, what: str) -> None:
    if x.ndim == 4:
        if x.dtype != np.uint8:
            raise DataError(
                f"{what} holds images of dtype {x.dtype}: store images as uint8 (N, H, W, C), "
                "e.g. np.clip(x, 0, 255).astype(np.uint8), or flatten them to float features (N, D)"
            )
        return
    if x.ndim != 2:
        raise DataError(
            f"{what} has shape {x.shape}: expected uint8 images (N, H, W, C) or features (N, D)"
            + (" (add a channel axis with x[..., None])" if x.ndim == 3 else "")
        )
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} has dtype {x.dtype}: features must be numbers")
    if x.dtype.kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(
                f"{what} has {bad} non-finite values (NaN or inf): remove or impute them before loading"
            )


# --------------------------------------------------------------------------
# Cache of decoded arrays
# --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Cache directory: ``$OTREWEIGHT_CACHE`` or ``~/.cache/otreweight``."""
    env = os.environ.get("OTREWEIGHT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "otreweight"


def _resolve_cache_dir(cache_dir) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _fingerprint(path: Path) -> list:
    """Absolute path, size and mtime of a file, or of every file in a folder."""
    st = path.stat()
    if not path.is_dir():
        return [str(path), st.st_size, st.st_mtime_ns]
    rows = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for fname in sorted(filenames):
            fst = os.stat(os.path.join(dirpath, fname))
            rows.append([os.path.relpath(os.path.join(dirpath, fname), path), fst.st_size, fst.st_mtime_ns])
    return [str(path), rows]


def _cache_path(cache_dir: Path, prefix: str, *parts) -> Path:
    digest = hashlib.sha256(repr((_CACHE_VERSION,) + parts).encode()).hexdigest()[:20]
    return cache_dir / f"{prefix}-{digest}.npz"


def _read_cache(path: Path) -> ArrayDataset | None:
    """The cached dataset, or None when absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["version"]) != _CACHE_VERSION:
                return None
            arrays = {k: z[k] for k in _ARRAY_KEYS}
            return ArrayDataset(classes=list(z["classes"]), name=str(z["name"]), **arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, ds: ArrayDataset) -> None:
    """Write ``ds`` atomically (temp file + rename); warn if not possible."""
    arrays = {k: getattr(ds, k) for k in _ARRAY_KEYS}
    try:
        atomic_write(path, lambda f: np.savez(
            f, version=np.array(_CACHE_VERSION), name=np.array(ds.name), classes=np.array(ds.classes, dtype=str), **arrays
        ))
    except OSError as e:
        warnings.warn(f"could not write the data cache {path} ({e}); data will be decoded again next time")


# --------------------------------------------------------------------------
# Archives and downloads
# --------------------------------------------------------------------------


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _urlretrieve(url: str, dest: str) -> None:
    """Download ``url`` to the file ``dest`` (raises OSError when offline)."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url.rsplit('/', 1)[-1]}",
                  disable=None) as bar:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` without leaving ``dest`` or following links.

    Members land in a temporary folder first; each top-level entry is then
    renamed into ``dest`` (existing entries are kept).
    """
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python without extraction filters: check members by hand
                base = os.path.realpath(tmp)
                for m in tar.getmembers():
                    target = os.path.realpath(os.path.join(base, m.name))
                    if not (m.isfile() or m.isdir()) or os.path.commonpath([base, target]) != base:
                        raise DataError(f"{archive} has an unsafe member {m.name!r}: refusing to extract it")
                tar.extractall(tmp)
        for entry in tmp.iterdir():
            if not (dest / entry.name).exists():
                os.replace(entry, dest / entry.name)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"cannot extract {archive} ({e}): the archive is damaged; delete it and fetch it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# CIFAR (official python format)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Image folders (class per folder), plain or in a tar archive
# --------------------------------------------------------------------------

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _decode_image(source, image_size=None) -> np.ndarray:
    """Decode one image (a path, or the bytes of a file) to RGB uint8 (H, W, 3).

    ``image_size=(H, W)`` resizes with bilinear interpolation.
    """
    from PIL import Image

    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(f) as im:
        im = im.convert("RGB")
        if image_size is not None:
            h, w = image_size
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _list_folder(root: Path) -> tuple[str, dict]:
    """Find ``train/`` and ``test/`` (at ``root`` or one level down) and list them.

    Returns the folder used and ``{split: {class: [(label, path), ...]}}``.
    """
    base = root
    if not (root / "train").is_dir():
        inner = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / "train").is_dir()]
        if len(inner) != 1:
            raise DataError(f"no train/ and test/ folders in {root}: expected "
                            f"{root}/train/<class>/<image> and {root}/test/<class>/<image>")
        base = inner[0]
    listing = {}
    for split in ("train", "test"):
        d = base / split
        if not d.is_dir():
            raise DataError(f"{base} has no {split}/ folder: expected {base}/{split}/<class>/<image>")
        listing[split] = {
            c.name: sorted((f.name, c / f.name) for f in c.iterdir() if f.is_file() and _is_image_name(f.name))
            for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")
        }
    return str(base), listing


def _list_archive(archive: Path) -> tuple[str, dict]:
    """Like :func:`_list_folder` for a tar archive; files are read into memory.

    Nothing is extracted to disk; only regular files are read.
    """
    files, dirs = {}, set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
                if m.isdir():
                    dirs.add(parts)
                elif m.isfile() and len(parts) >= 3 and _is_image_name(parts[-1]):
                    files[parts] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"cannot read {archive} ({e}): the archive is damaged; fetch it again") from None

    def split_dirs(parts):  # (prefix, split, class) when parts ends in <split>/<class>
        return (parts[:-2], parts[-2], parts[-1]) if len(parts) >= 2 and parts[-2] in ("train", "test") else None

    prefixes = {p[:-3] for p in files if p[-3] in ("train", "test")}
    prefixes |= {s[0] for s in map(split_dirs, dirs) if s and not s[2].startswith(".")}
    prefixes = {p for p in prefixes if len(p) <= 1}
    if len(prefixes) != 1:
        raise DataError(f"no single train/ and test/ folder pair in {archive}: expected "
                        "train/<class>/<image> and test/<class>/<image>, at the top or inside one folder")
    (prefix,) = prefixes
    listing = {"train": {}, "test": {}}
    for parts in dirs:
        s = split_dirs(parts)
        if s and s[0] == prefix and not s[2].startswith("."):
            listing[s[1]].setdefault(s[2], [])
    for parts, raw in files.items():
        if parts[:-3] == prefix and parts[-3] in ("train", "test") and not parts[-2].startswith("."):
            listing[parts[-3]].setdefault(parts[-2], []).append((parts[-1], raw))
    for split in listing.values():
        for items in split.values():
            items.sort(key=lambda t: t[0])
    where = f"{archive}:{'/'.join(prefix)}" if prefix else str(archive)
    for split in ("train", "test"):
        if not listing[split]:
            raise DataError(f"{where} has no {split}/<class>/ folders: expected {split}/<class>/<image>")
    return where, listing


def _decode_all(sources: list, names: list[str], image_size, num_workers) -> np.ndarray:
    """Decode ``sources`` in parallel into one uint8 array (N, H, W, 3)."""
    from tqdm.auto import tqdm

    def decode(i):
        try:
            return _decode_image(sources[i], image_size)
        except DataError:
            raise
        except Exception as e:  # Pillow raises many kinds of errors for bad files
            raise DataError(f"cannot decode image {names[i]} ({e}): remove or replace the file") from None

    first = decode(0)
    out = np.empty((len(sources),) + first.shape, dtype=np.uint8)
    out[0] = first

    def work(lo, hi):
        for i in range(lo, hi):
            img = decode(i)
            if img.shape != first.shape:
                raise DataError(
                    f"image {names[i]} is {img.shape[0]}x{img.shape[1]} but {names[0]} is "
                    f"{first.shape[0]}x{first.shape[1]}: pass image_size=(H, W) to resize all images"
                )
            out[i] = img
        return hi - lo

    workers = num_workers or min(8, os.cpu_count() or 1)
    chunk = 256
    with tqdm(total=len(sources), initial=1, unit="img", desc="decoding images", disable=None) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(work, lo, min(lo + chunk, len(sources))) for lo in range(1, len(sources), chunk)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise fut.exception()
                bar.update(fut.result())
    return out


def load_image_folder(root, cache_dir=None, image_size=None, num_workers=None) -> ArrayDataset:
    """Load class-per-folder images: ``root/train/<class>/*``, ``root/test/<class>/*``.

    Parameters
    ----------
    root : path
        The folder, or a ``.tar.gz``/``.tgz``/``.tar`` archive holding it;
        ``train/`` and ``test/`` may sit one folder down (``<name>/train/...``).
        Archives are read in place, nothing is extracted to disk.
    cache_dir : path, optional
        Where decoded arrays are cached; default :func:`default_cache_dir`.
    image_size : (int, int), optional
        ``(H, W)`` to resize every image to (bilinear); without it all images
        must share one size.
    num_workers : int, optional
        Decoding threads; default ``min(8, cpu count)``.

    Returns
    -------
    ArrayDataset
        uint8 RGB images ``(N, H, W, 3)``; classes are the sorted folder names
        of ``train/``; files are taken in sorted order. Extensions
        .png .jpg .jpeg .bmp (any case); hidden files are skipped.

    Raises
    ------
    DataError
        Layout wrong, class sets differ, a file does not decode, or sizes differ.
    """
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist: give a folder with train/<class>/ and "
                        "test/<class>/ subfolders, or a .tar.gz of one")
    if image_size is not None:
        try:
            size = tuple(int(v) for v in image_size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise DataError(f"image_size={image_size!r} is not (H, W): give two positive integers")
        image_size = size
    archive = _is_archive(root)
    if not archive and not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a .tar.gz/.tgz/.tar archive: give an image folder or archive")

    cache = _resolve_cache_dir(cache_dir)
    cpath = _cache_path(cache, "folder", _fingerprint(root), image_size)
    cached = _read_cache(cpath)
    if cached is not None:
        return cached

    where, listing = _list_archive(root) if archive else _list_folder(root)
    classes = sorted(listing["train"])
    if not classes:
        raise DataError(f"{where}/train has no class folders: expected train/<class>/<image>")
    if set(listing["test"]) != set(classes):
        only_train = sorted(set(classes) - set(listing["test"]))
        only_test = sorted(set(listing["test"]) - set(classes))
        detail = "; ".join(s for s in (
            f"only in train/: {', '.join(only_train)}" if only_train else "",
            f"only in test/: {', '.join(only_test)}" if only_test else "") if s)
        raise DataError(f"{where}: train/ and test/ have different class folders ({detail}); "
                        "give both splits the same classes")
    empty = [c for c in classes if not listing["train"][c]]
    if empty:
        raise DataError(f"{where}/train/{empty[0]} has no images (.png .jpg .jpeg .bmp): "
                        "add images or remove the folder")

    sources, names, labels, counts = [], [], [], {}
    for split in ("train", "test"):
        n = 0
        for k, c in enumerate(classes):
            for fname, src in listing[split][c]:
                sources.append(src)
                names.append(f"{where}/{split}/{c}/{fname}")
                labels.append(k)
                n += 1
        counts[split] = n
    x = _decode_all(sources, names, image_size, num_workers)
    y = np.asarray(labels, dtype=np.int64)
    n_train = counts["train"]
    ds = ArrayDataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes, f"folder:{root}")
    _write_cache(cpath, ds)
    return ds


# --------------------------------------------------------------------------
# .npz arrays
# --------------------------------------------------------------------------


def load_npz(path) -> ArrayDataset:
    """Load arrays saved with ``np.savez``.

    Parameters
    ----------
    path : path
        ``.npz`` with keys ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
        optionally ``classes`` (str array). Without ``classes`` the names are
        ``"0" .. "K-1"`` with ``K = max label + 1``.

    Returns
    -------
    ArrayDataset

    Raises
    ------
    DataError
        Missing file or keys, object arrays, or invalid arrays.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise DataError(f"{path} does not exist: give an .npz with x_train, y_train, x_test, y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _ARRAY_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} lacks keys {', '.join(missing)}: save x_train, y_train, x_test, "
                                "y_test (and optionally classes) with np.savez")
            arrays = {k: z[k] for k in _ARRAY_KEYS}
            classes = z["classes"] if "classes" in z.files else None
    except DataError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{path} holds object arrays: save plain arrays, and classes as a str array "
                            "(np.array(names, dtype=str))") from None
        raise DataError(f"cannot read {path} ({e}): save it again with np.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} ({e}): save it again with np.savez") from None
    try:
        if classes is None:
            ys = [np.asarray(arrays[k]) for k in ("y_train", "y_test")]
            k = max((int(y.max()) for y in ys if y.size and y.dtype.kind in "iub"), default=0) + 1
            classes = [str(i) for i in range(k)]
        else:
            classes = [str(c) for c in np.asarray(classes).reshape(-1)]
        return ArrayDataset(classes=classes, name=f"npz:{path}", **arrays)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


# --------------------------------------------------------------------------
# Registry and dispatch
# --------------------------------------------------------------------------

SOURCES: dict[str, Callable[..., ArrayDataset]] = {}


def register_source(name: str):
    """Decorator registering a loader under ``name`` for :func:`load_dataset`.

    The loader is called as ``fn(root=..., download=..., cache_dir=..., **kw)``
    and returns an :class:`ArrayDataset`.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """
    key = name.lower()

    def deco(fn):
        if key in SOURCES:
            raise ValueError(f"a data source named {name!r} is already registered")
        SOURCES[key] = fn
        return fn

    return deco


@register_source("cifar10")
def _cifar10(root=None, download=True, cache_dir=None):
    return load_cifar("cifar10", root, download=download, cache_dir=cache_dir)


@register_source("cifar100")
def _cifar100(root=None, download=True, cache_dir=None):
    return load_cifar("cifar100", root, download=download, cache_dir=cache_dir)


def load_dataset(spec: str, root=None, download: bool = True, cache_dir=None, **kw) -> ArrayDataset:
    """Load a dataset by name or path.

    Parameters
    ----------
    spec : str
        A registered name (``"cifar10"``, ``"cifar100"``, see ``SOURCES``);
        a path ending in ``.npz`` (or ``"npz:<path>"``); otherwise an image
        folder or archive (or ``"folder:<path>"``).
    root : path, optional
        Data folder for named sources.
    download : bool
        Let named sources download missing data.
    cache_dir : path, optional
        Cache of decoded arrays; default :func:`default_cache_dir`.
    **kw
        Passed to the loader (e.g. ``image_size`` for image folders).

    Returns
    -------
    ArrayDataset

    Raises
    ------
    DataError
        Unknown name, missing path, or any loader error.
    """
    spec = str(spec)
    if spec.lower() in SOURCES:
        return SOURCES[spec.lower()](root=root, download=download, cache_dir=cache_dir, **kw)
    if spec.startswith("npz:"):
        return load_npz(spec[4:], **kw)
    if spec.startswith("folder:"):
        return load_image_folder(spec[7:], cache_dir=cache_dir, **kw)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".npz"):
        return load_npz(path, **kw)
    if path.exists():
        return load_image_folder(path, cache_dir=cache_dir, **kw)
    raise DataError(f"unknown dataset {spec!r}: use one of {', '.join(sorted(SOURCES))}, "
                    "a .npz file, or an image folder / .tar.gz archive")
