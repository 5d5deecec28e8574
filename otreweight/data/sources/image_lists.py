"""Large image data sets as users download them: split files over an image root, read lazily.

Registered as ``"image_list"``: ``data.source: image_list``, ``data.root: <image root>`` and the
split files in ``data.source_options`` (``train``, optional ``val``, ``test``; a relative name is
looked up in the root, then beside it). Each split file is one of

* ``.txt`` - one ``relative/path label`` per line, the lists shipped with ImageNet-LT and
  Places-LT (``ImageNet_LT_train.txt`` / ``_val.txt`` / ``_test.txt``) and the
  ``iNaturalist18_*.txt`` lists of long-tail repositories; labels are integers ``0..K-1``;
* ``.csv`` - a header naming ``path`` and ``label`` columns (other columns ignored); labels are
  integers or class names;
* ``.json`` - iNaturalist 2018's COCO-style files (``train2018.json``, ``val2018.json``):
  ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``, ``category_id``) and
  ``categories`` (``id``, ``name``); classes are the categories in id order.

Paths are resolved against ``data.root`` (``images: <folder>`` overrides it). Nothing is decoded
when the data set is opened: the splits are :class:`~otreweight.data.sources.folder.ImageFileSplit`
views whose images the stream loader's workers decode (``data.image_size: [H, W]`` resizes them;
without it every image must have the first one's size). A ``val`` file is the validation split as
given (the meta set is still drawn from the training split, per class); keep the training split as
it is with ``data.profile: given``.

Every line is checked when the files are read: a line that is not ``path label``, a label outside
the classes, a missing image (``check_files: true``, the default; ``false`` skips the ``stat`` of
every file on slow file systems) and a JSON file without ``annotations`` are one-line errors naming
the file and the line. An image that does not decode stops the run with one line naming it (it is
not skipped: a silently smaller data set would change what is measured).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .arrays import DataError
from .folder import ImageFileSplit, LazyImageFolder
from .registry import register_source

__all__ = ["ImageListDataset", "read_split_file"]


class ImageListDataset(LazyImageFolder):
    """Lazily read images of split files; ``split("train" | "val" | "test")`` (``val`` when given)."""

    @property
    def has_val(self) -> bool:
        return "val" in self._splits

    def split(self, which: str) -> ImageFileSplit:
        if which not in self._splits:
            raise DataError(f"unknown split {which!r}; use {', '.join(self._splits)}")
        return self._splits[which]


def _where(path: Path, line: int | None = None) -> str:
    return f"{path}" + (f" line {line}" if line is not None else "")


def _read_txt(path: Path) -> list[tuple[str, str, int]]:
    rows = []
    for i, raw in enumerate(_text(path).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"{_where(path, i)} is not 'path label' ({line[:60]!r}); one image path and its "
                            "integer label per line")
        rows.append((parts[0], parts[1], i))
    return rows


def _read_csv(path: Path) -> list[tuple[str, str, int]]:
    reader = csv.DictReader(io.StringIO(_text(path)))
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    for need in ("path", "label"):
        if need not in cols:
            raise DataError(f"{path} has no {need!r} column (its header: {', '.join(reader.fieldnames or []) or 'none'}); "
                            "give a header row with path and label")
    rows = []
    for i, r in enumerate(reader, 2):
        p, lab = (r.get(cols["path"]) or "").strip(), (r.get(cols["label"]) or "").strip()
        if not p or not lab:
            raise DataError(f"{_where(path, i)} has an empty {'path' if not p else 'label'}; every row needs both")
        rows.append((p, lab, i))
    return rows


def _read_json(path: Path) -> tuple[list[tuple[str, str, int]], dict]:
    try:
        doc = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{_where(path, e.lineno)} is not valid JSON ({e.msg}); fetch the file again") from None
    if not isinstance(doc, dict) or "images" not in doc:
        raise DataError(f"{path} has no 'images' list; give a COCO-style file (images, annotations, categories)")
    if doc.get("annotations") is None:
        raise DataError(f"{path} has no 'annotations' (a test file without labels?); give a labelled split "
                        "(e.g. val2018.json as the test split)")
    for key in ("images", "annotations"):
        if not isinstance(doc[key], list):
            raise DataError(f"{path}: '{key}' is a {type(doc[key]).__name__}, not a list; give a COCO-style file")
    if not isinstance(doc.get("categories", []), list):
        raise DataError(f"{path}: 'categories' is a {type(doc['categories']).__name__}, not a list; give a COCO-style file")
    files = {}
    for img in doc["images"]:
        try:
            files[img["id"]] = str(img["file_name"])
        except (KeyError, TypeError):
            raise DataError(f"{path}: an entry of 'images' lacks id or file_name ({str(img)[:60]})") from None
    names = {_category(c["id"], path, "categories"): str(c.get("name", c["id"]))
             for c in doc.get("categories", []) if isinstance(c, dict) and "id" in c}
    rows = []
    for k, a in enumerate(doc["annotations"]):
        try:
            image, cat = a["image_id"], a["category_id"]
        except (KeyError, TypeError):
            raise DataError(f"{path}: annotation {k} lacks image_id or category_id") from None
        if image not in files:
            raise DataError(f"{path}: annotation {k} names image {image}, which 'images' does not list")
        rows.append((files[image], str(_category(cat, path, f"annotation {k}")), k))
    return rows, names


def _category(value, path: Path, where: str) -> int:
    """A COCO category id: an integer (or a string of one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise DataError(f"{path} {where}: category id {json.dumps(value)[:40]} is not an integer; iNaturalist / COCO "
                    "files number their categories 0, 1, ... (give class names in a .csv list instead)")


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read split file {path} ({e.strerror or e}); check data.source_options") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark is no part of the first path
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{_where(path, line)} is not UTF-8 text; save the file as UTF-8") from None


def read_split_file(path: Path) -> tuple[list[tuple[str, str, int]], dict, str]:
    """``(rows, category names, kind)``: rows are ``(relative path, label text, line)``."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows, names = _read_json(path)
        return rows, names, "json"
    if suffix == ".csv":
        return _read_csv(path), {}, "csv"
    return _read_txt(path), {}, "txt"


def _find(root: Path, name) -> Path:
    p = Path(str(name)).expanduser()
    for cand in ([p] if p.is_absolute() else [root / p, root.parent / p, p]):
        if cand.is_file():
            return cand
    raise DataError(f"split file {name} is not in {root} (nor beside it); give its path in data.source_options")


def _labels(kind: str, rows: list, path: Path, classes: list | None):
    """Integer labels of ``rows`` and the class list (taken from the training file when ``classes`` is None)."""
    ints = all(lab.lstrip("-").isdigit() for _, lab, _ in rows)
    if kind == "txt" and not ints:
        p, lab, i = next(r for r in rows if not r[1].lstrip("-").isdigit())
        raise DataError(f"{_where(path, i)}: label {lab!r} is not an integer; .txt lists hold 'path label' with "
                        "labels 0..K-1 (use a .csv for class names)")
    if ints:
        y = np.asarray([int(lab) for _, lab, _ in rows], dtype=np.int64)
        k = len(classes) if classes is not None else int(y.max()) + 1 if len(y) else 0
        bad = np.flatnonzero((y < 0) | (y >= k))
        if bad.size:
            p, lab, i = rows[int(bad[0])]
            raise DataError(f"{_where(path, i)}: label {lab} is outside the {k} classes of the training file "
                            f"(0..{k - 1}); fix the label or the list")
        return y, classes if classes is not None else [str(c) for c in range(k)]
    if classes is None:
        classes = sorted({lab for _, lab, _ in rows})
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for p, lab, i in rows:
        if lab not in index:
            raise DataError(f"{_where(path, i)}: class {lab!r} is not in the training file; fix the label")
        out.append(index[lab])
    return np.asarray(out, dtype=np.int64), classes


@register_source("image_list")
def load_image_lists(root=None, download=True, cache_dir=None, train=None, val=None, test=None,
                     images=None, image_size=None, check_files: bool = True) -> ImageListDataset:
    """Open the split files ``train`` / ``val`` / ``test`` over the image root (see the module docstring).

    Parameters
    ----------
    train : str
        The training split file (``.txt`` ``path label`` lines, ``.csv`` with ``path`` and ``label``, or iNaturalist ``.json``).
    val : str or None
        The validation split file, used as the validation split as given (null: drawn from the training split).
    test : str
        The test split file.
    images : str or None
        The folder the image paths are relative to, when it is not ``data.root``.
    image_size : list of int or None
        [H, W] to resize every image to (null: every image must have the first one's size).
    check_files : bool
        Check that every listed image exists when the files are read (false skips the ``stat`` calls on slow file systems).
    """
    if root is None:
        raise DataError("image_list needs data.root: the folder the split files' image paths are relative to")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"image root {root} does not exist; set data.root to the folder holding the images")
    if train is None or test is None:
        raise DataError("image_list needs data.source_options.train and .test (split files: .txt 'path label' lists, "
                        "a .csv with path,label columns, or iNaturalist-style .json)")
    base = Path(images).expanduser().absolute() if images is not None else root
    splits, classes, cat_ids = {}, None, None
    for which, name in (("train", train), ("val", val), ("test", test)):
        if name is None:
            continue
        path = _find(root, name)
        rows, names, kind = read_split_file(path)
        if not rows:
            raise DataError(f"{path} lists no image; give a split file with one line per image")
        if kind == "json":
            y, classes, cat_ids = _json_labels(rows, path, names, cat_ids, classes)
        else:
            y, classes = _labels(kind, rows, path, classes)
        _refuse_repeats(rows, path, kind)
        items = [str(base / p) for p, _, _ in rows]
        if check_files:
            for (p, _, i), full in zip(rows, items):
                if not Path(full).is_file():
                    where = f"annotation {i}" if kind == "json" else f"line {i}"
                    raise DataError(f"{path} {where} names {p}, which is not under {base}; fix the list or data.root "
                                    "(or data.source_options.images)")
        splits[which] = ImageFileSplit(items, [f"{path.name}:{p}" for p, _, _ in rows], y, classes,
                                       tuple(image_size) if image_size else None, [p for p, _, _ in rows])
    return ImageListDataset(splits, classes, f"image_list:{root}")


def _refuse_repeats(rows: list, path: Path, kind: str) -> None:
    """A split holds each image once: a path listed twice could land in training and in validation."""
    first, repeats = {}, []
    for p, _, i in rows:
        key = str(Path(p))
        if key in first:
            repeats.append((p, first[key], i))
        else:
            first[key] = i
    if repeats:
        p, a, b = repeats[0]
        what = "annotations" if kind == "json" else "lines"
        n_images = len({str(Path(r[0])) for r in repeats})
        raise DataError(f"{path} lists {n_images} image(s) more than once ({len(repeats)} repeated {what}; e.g. {p} "
                        f"at {what[:-1]} {a} and {b}); a split must hold each image once: remove the repeats")


def _json_labels(rows, path, names, cat_ids, classes):
    """Labels 0..K-1 of COCO-style rows: the training file's categories (and ``categories``) in id order."""
    if cat_ids is None:
        cat_ids = sorted({int(lab) for _, lab, _ in rows} | {int(c) for c in names})
        classes = [names.get(c, str(c)) for c in cat_ids]
    index = {c: i for i, c in enumerate(cat_ids)}
    out = []
    for _, lab, i in rows:
        c = int(lab)
        if c not in index:
            raise DataError(f"{path} annotation {i}: category {lab} is not among the training file's categories")
        out.append(index[c])
    return np.asarray(out, dtype=np.int64), classes, cat_ids
