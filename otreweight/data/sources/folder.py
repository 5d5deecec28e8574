"""Class-per-folder images, ``train/<class>/*`` and ``test/<class>/*``, plain or in a tar archive.

Registered as the path source ``"folder"``: ``load_dataset("folder:<path>")``, or
any existing path no other path source claims (its sniffer is asked last).
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from .cache import _cache_path, _fingerprint, _read_cache, _resolve_cache_dir, _write_cache
from .arrays import ArrayDataset, DataError
from .registry import register_source

__all__ = ["IMAGE_EXTENSIONS", "ImageFileSplit", "LazyImageFolder", "load_image_folder", "open_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
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
        if im.mode.startswith("I;16") or im.mode in ("I", "F"):
            # 16-bit (or 32-bit) grey, scaled to 8 bits from its range: convert("RGB") would clip every
            # value above 255 to white. Float images are taken as [0, 1] when they stay in it, else [0, 255].
            arr = np.asarray(im, dtype=np.float64)
            if im.mode == "F":
                arr = arr if arr.max(initial=0.0) <= 1.0 else arr / 255.0
            else:
                arr = arr / 65535.0
            im = Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8), mode="L")
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


def _list_archive(archive: Path, offsets: bool = False) -> tuple[str, dict]:
    """Like :func:`_list_folder` for a tar archive; files are read into memory, or, with
    ``offsets=True`` and an uncompressed tar, listed as ``(archive, offset, size)`` to read later.

    Nothing is extracted to disk; only regular files are read.
    """
    files, dirs = {}, set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            seekable = offsets and tar.fileobj is not None and type(tar.fileobj).__name__ == "BufferedReader"
            for m in tar:
                parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
                if m.isdir():
                    dirs.add(parts)
                elif m.isfile() and len(parts) >= 3 and _is_image_name(parts[-1]):
                    files[parts] = (str(archive), m.offset_data, m.size) if seekable else tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
        raise DataError(f"cannot read {archive} ({reason}): it is not a readable tar / tar.gz archive; fetch it again") from None

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
                    f"{first.shape[0]}x{first.shape[1]}: pass image_size=(H, W) to resize all images (data.image_size: [H, W] in a config)"
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


def _check_listing(where: str, listing: dict) -> list:
    """The sorted class names of a listing; one-line errors for missing, differing or empty classes."""
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

    return classes


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
    classes = _check_listing(where, listing)

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


def _read_item(src) -> bytes | str:
    if isinstance(src, tuple):  # (uncompressed tar, offset, size)
        with open(src[0], "rb") as fh:
            fh.seek(src[1])
            return fh.read(src[2])
    return src


class ImageFileSplit:
    """One split of a class-per-folder image source, read lazily: an example is decoded when a
    loader worker asks for it (paths in a folder, member offsets in an uncompressed tar, or the
    encoded bytes of a compressed archive's members)."""

    modality = "image"

    def __init__(self, items: list, names: list, labels, classes, image_size=None, paths: list | None = None) -> None:
        self.items, self.names = items, names
        #: each file's path relative to the source (a folder or list's image root), or its member name in an archive
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes, self.image_size = list(classes), image_size
        self._shape = None

    def __len__(self) -> int:
        return len(self.items)

    def read(self, i: int):
        """Example ``i`` decoded, ``(image, label)``, of whatever size the file has (for transforms)."""
        try:
            return _decode_image(_read_item(self.items[i]), self.image_size), int(self.labels[i])
        except Exception as e:  # noqa: BLE001 - any decoder error names the file
            raise DataError(f"{self.names[i]} does not decode as an image ({type(e).__name__}): "
                            "remove or replace the file") from None

    def __getitem__(self, i: int):
        x, _ = self.read(i)
        if self._shape is None:  # without image_size every image has one size: the first one read here
            self._shape, self._ref = tuple(x.shape), self.names[i]
        if x.shape != self._shape:
            ref = getattr(self, "_ref", None) or self.names[0]
            raise DataError(f"{self.names[i]} is {x.shape[1]}x{x.shape[0]} but {ref} is "
                            f"{self._shape[1]}x{self._shape[0]}: set data.image_size: [H, W] or resize the images")
        return x, int(self.labels[i])

    @property
    def example_shape(self) -> tuple:
        if self._shape is None:
            self._shape, self._ref = tuple(self.read(0)[0].shape), self.names[0]
        return self._shape


class LazyImageFolder:
    """Class-per-folder images listed but not decoded; ``split("train" | "test")`` gives
    :class:`ImageFileSplit` views whose examples are decoded on demand."""

    modality = "image"

    def __init__(self, splits: dict, classes: list, name: str) -> None:
        self._splits, self.classes, self.name = splits, classes, name
        self.y_train, self.y_test = splits["train"].labels, splits["test"].labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, which: str) -> ImageFileSplit:
        if which not in self._splits:
            raise DataError(f"unknown split {which!r}; use train or test")
        return self._splits[which]


def open_image_folder(root, image_size=None) -> LazyImageFolder:
    """List class-per-folder images (as :func:`load_image_folder`, same layout rules and errors)
    without decoding any: the streamed loader decodes them in its workers."""
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist: give a folder with train/<class>/ and "
                        "test/<class>/ subfolders, or a .tar.gz of one")
    archive = _is_archive(root)
    if not archive and not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a .tar.gz/.tgz/.tar archive: give an image folder or archive")
    where, listing = _list_archive(root, offsets=True) if archive else _list_folder(root)
    classes = _check_listing(where, listing)
    # the folder holding train/ and test/, relative to root (an archive's member prefix): "" or one name
    inner = where[len(str(root)) + 1:] if archive else Path(where).relative_to(root).as_posix()
    inner = "" if inner == "." else inner
    splits = {}
    for split in ("train", "test"):
        items, names, labels, paths = [], [], [], []
        for k, c in enumerate(classes):
            for fname, src in listing[split][c]:
                items.append(str(src) if isinstance(src, Path) else src)
                names.append(f"{where}/{split}/{c}/{fname}")
                paths.append("/".join(p for p in (inner, split, c, fname) if p))
                labels.append(k)
        splits[split] = ImageFileSplit(items, names, labels, classes, image_size, paths)
    return LazyImageFolder(splits, classes, f"folder:{root}")


def _is_path(path: Path) -> bool:
    """Any existing path: the image folder / archive is the fallback of the path sources."""
    return path.exists()


@register_source("folder", sniff=_is_path, order=100, what="an image folder / .tar.gz archive")
def _folder(root, download=True, cache_dir=None, lazy=False, **kw):
    """Class folders ``root/train/<class>/*``, ``root/test/<class>/*`` (or a ``.tar.gz`` / ``.tar`` of them).

    Parameters
    ----------
    lazy : bool
        List the files only and decode each batch in the loader workers (``data.loader: stream``), instead of decoding every image once into a cached array.
    **kw
        ``image_size`` ([H, W] to resize every image to) and ``num_workers`` (decoding threads) of :func:`load_image_folder`.
    """
    if lazy:
        return open_image_folder(root, image_size=kw.get("image_size"))
    return load_image_folder(root, cache_dir=cache_dir, **kw)
