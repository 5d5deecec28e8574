"""Text classification data as users have them: ``train`` / ``test`` files or class folders of ``.txt``.

Registered as ``"text"``: ``load_dataset("text:<folder>")``, or a folder that holds one of

* ``train.tsv`` / ``test.tsv`` (optionally ``.gz``): one ``label<TAB>text`` line per document, no
  header (the 20 Newsgroups copy in ``shared/data``, the Reuters R8 / R52 releases);
* ``train.csv`` / ``test.csv`` (or ``.tsv`` with a header row naming ``text`` and ``label``
  columns): any other columns are ignored;
* ``train.jsonl`` / ``test.jsonl``: one ``{"text": ..., "label": ...}`` object per line;
* ``train/<class>/*.txt`` and ``test/<class>/*.txt`` (or ``*-train`` / ``*-test`` folders, the
  20news-bydate layout): one document per file.

Files are read as UTF-8 (a byte that is not gives one line naming the file and line). Class names
are the sorted labels of the training split; a test label that is not among them is an error naming
it. Every bad line (no tab, empty label, empty text, a missing column) is one line naming the file
and the line number.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .arrays import ArraySplits, DataError
from .download import read_maybe_gzip
from .registry import register_source

__all__ = ["TextDataset", "find_text_files", "load_text"]

_FORMATS = ("tsv", "csv", "jsonl")


class TextDataset(ArraySplits):
    """Labelled train / test documents (strings) with class names; modality ``tokens``."""

    modality = "tokens"

    def __init__(self, x_train, y_train, x_test, y_test, classes, name: str, names: dict | None = None) -> None:
        #: ``{"train" | "test": [where each document comes from]}``: ``train.tsv:<line>`` or ``train/<class>/<file>``
        self.names = names or {}
        self.x_train = np.asarray(x_train, dtype=object)
        self.x_test = np.asarray(x_test, dtype=object)
        self.y_train = np.asarray(y_train, dtype=np.int64)
        self.y_test = np.asarray(y_test, dtype=np.int64)
        self.classes, self.name = [str(c) for c in classes], name
        if len(self.x_train) == 0:
            raise DataError(f"{name}: the training split holds no document")

    def split(self, which: str):
        part = super().split(which)
        part.names = self.names.get(which)
        return part


def _lines(path: Path):
    raw = read_maybe_gzip(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path} line {line} is not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    # a byte-order mark (Notepad, Excel) is no part of the first label; records end at "\n" alone (a form
    # feed or U+2028 inside a document is text, not a line break)
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.removeprefix("\ufeff").split("\n")]


def _csv_rows(text: str, delim: str):
    """csv rows of ``text``, a field as long as the whole text allowed (csv's default stops at 131,072
    characters; the limit is the module's, restored after reading)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, min(len(text) + 1, 2**31 - 1)))
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delim))
    finally:
        csv.field_size_limit(old)


def _read_file(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(texts, label names, ``<file>:<line>`` of each document) of one train / test file."""
    lines = _lines(path)
    fmt = path.name.split(".")[1]
    texts, labels, where = [], [], []
    if fmt == "jsonl":
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise DataError(f"{path} line {n} is not a JSON object; give one {{\"text\": ..., \"label\": ...}} per line") from None
            if not isinstance(obj, dict) or "text" not in obj or "label" not in obj:
                raise DataError(f"{path} line {n} lacks a \"text\" or \"label\" key")
            if not isinstance(obj["text"], str):
                raise DataError(f"{path} line {n}: \"text\" is {json.dumps(obj['text'])[:40]}, not a string; give "
                                "each document's text or remove the line")
            if not isinstance(obj["label"], (str, int, float)) or isinstance(obj["label"], bool):
                raise DataError(f"{path} line {n}: \"label\" is {json.dumps(obj['label'])[:40]}; give a class "
                                "name or an integer")
            texts.append(obj["text"]), labels.append(obj["label"]), where.append(n)
    else:
        delim = "\t" if fmt == "tsv" else ","
        first = (_csv_rows(lines[0], delim) or [[]])[0] if lines else []
        header = [h.strip().lower() for h in first]
        if fmt == "csv" or ("text" in header and "label" in header):
            if "text" not in header or "label" not in header:
                missing = [c for c in ("text", "label") if c not in header]
                raise DataError(f"{path} has no {' or '.join(missing)} column in its header (columns: {', '.join(first)})")
            ti, li = header.index("text"), header.index("label")
            for n, row in enumerate(_csv_rows("\n".join(lines[1:]), delim), 2):
                if not row:
                    continue
                if len(row) <= max(ti, li):
                    raise DataError(f"{path} line {n} has {len(row)} columns; the header names {len(first)}")
                texts.append(row[ti]), labels.append(row[li]), where.append(n)
        else:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                label, tab, text = line.partition("\t")
                if not tab:
                    raise DataError(f"{path} line {n} has no tab: expected label<TAB>text")
                texts.append(text), labels.append(label), where.append(n)
    for n, (t, lab) in enumerate(zip(texts, labels), 1):
        if str(lab).strip() == "":
            raise DataError(f"{path} document {n} has an empty label")
        if not str(t).strip():
            raise DataError(f"{path} document {n} (label {lab}) has an empty text; remove it or give it a text")
    return [str(t) for t in texts], [str(lab).strip() for lab in labels], [f"{path.name}:{n}" for n in where]


def _read_class_folders(folder: Path) -> tuple[list[str], list[str], list[str]]:
    texts, labels, names = [], [], []
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    for d in classes:
        files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"{d} holds no document; add files or remove the folder")
        for f in files:
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as e:
                line = raw[: e.start].count(b"\n") + 1
                raise DataError(f"{f} line {line} is not UTF-8 text; save it as UTF-8 (or re-encode latin-1 files)") from None
            if not text.strip():
                raise DataError(f"{f} is an empty document; remove it")
            texts.append(text), labels.append(d.name), names.append(f"{folder.name}/{d.name}/{f.name}")
    return texts, labels, names


def find_text_files(root: Path):
    """``{"train": path, "test": path}`` of a text data folder, or ``None`` if it is not one."""
    root = Path(root)
    if not root.is_dir():
        return None
    for fmt in _FORMATS:
        for gz in ("", ".gz"):
            tr, te = root / f"train.{fmt}{gz}", root / f"test.{fmt}{gz}"
            if tr.is_file():
                return {"train": tr, "test": te}
    dirs = {s: [d for d in sorted(root.iterdir()) if d.is_dir() and (d.name == s or d.name.endswith(f"-{s}"))]
            for s in ("train", "test")}
    if len(dirs["train"]) == 1 and len(dirs["test"]) == 1:
        sub = [c for c in dirs["train"][0].iterdir() if c.is_dir()]
        if sub and any(f.suffix.lower() in (".txt", "") for c in sub[:3] for f in list(c.iterdir())[:3]):
            return {"train": dirs["train"][0], "test": dirs["test"][0]}
    return None


def load_text(root) -> TextDataset:
    """Load a text data folder (see the module docstring)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"text data folder {root} does not exist")
    files = find_text_files(root)
    if files is None:
        raise DataError(f"{root} holds no train.tsv / train.csv / train.jsonl (optionally .gz) nor train/<class>/*.txt "
                        "folders")
    if not files["test"].exists():
        raise DataError(f"{root} has {files['train'].name} but no {files['test'].name}; give both splits")
    read = _read_class_folders if files["train"].is_dir() else _read_file
    x_tr, l_tr, n_tr = read(files["train"])
    x_te, l_te, n_te = read(files["test"])
    classes = sorted(set(l_tr))
    index = {c: i for i, c in enumerate(classes)}
    stray = sorted(set(l_te) - set(classes))
    if stray:
        raise DataError(f"{files['test']} has label {stray[0]!r}, which no training document has; "
                        "every test label must be a training class")
    return TextDataset(x_tr, [index[c] for c in l_tr], x_te, [index[c] for c in l_te], classes, f"text:{root}",
                       {"train": n_tr, "test": n_te})


def _is_text_folder(path: Path) -> bool:
    return find_text_files(path) is not None


@register_source("text", sniff=_is_text_folder, order=50)
def _text(root, download=True, cache_dir=None):
    """A text folder: ``train.tsv`` / ``test.tsv`` (``label<TAB>text``, optionally ``.gz``), ``.csv``, ``.jsonl`` or ``train/<class>/*.txt``."""
    return load_text(root)
