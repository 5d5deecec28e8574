r"""Splits as files: the exact long-tailed split of a run, written out, read back and checked against data.

``otreweight split`` writes one tab-separated line per example of the source - its **role**
(``train``, ``meta``, ``val``, ``test``, or ``unused``: a training-pool example the long-tail profile
left out), its **id** (its row in its pool: the source's training pool for train / meta / val /
unused, the test split for test, the source's own validation file for val when it has one), its
**label** and **class**, its **path** (relative to the folder, the list's image root, or the
member name inside an archive; ``-`` for array sources; ``<file>:<line>`` for one-file text
sources) and the **sha256** of its bytes (the file's, or an array row's raw bytes, or a document's
UTF-8 text). The header lines (``# key<TAB>JSON``) hold the format, the data checksum (sha256 over
``pool id label sha256`` of every example, in file order), the class names, the settings that drew
the split and the config's ``data`` section.

``data.split_file: <file>`` uses such a file instead of drawing: :func:`check_against` compares its
classes, pool sizes, labels, paths (when the source has them) and, for array sources, bytes with
the data and names the first mismatch in one line. :func:`verify` lists every difference (missing,
extra, moved to another class, changed bytes, per-class counts), one line each.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import OTReweightError
from ..utils import file_digest
from .longtail import LongTailSplit

__all__ = ["SplitTable", "build_table", "check_against", "example_digests", "read_split_file", "verify",
           "write_split_file"]

FORMAT = "otreweight split v1"
COLUMNS = ("role", "id", "label", "class", "path", "sha256")
ROLES = ("train", "meta", "val", "test", "unused")
POOLS = ("train", "val", "test")  # the pools ids index; "val" only when the source has its own validation file


def _pool_of(role: str, given_val: bool) -> str:
    if role == "test":
        return "test"
    return "val" if role == "val" and given_val else "train"


# ----------------------------------------------------------------------------- what identifies an example
def _file_bytes(item) -> bytes:
    from .sources.folder import _read_item

    data = _read_item(item)
    if isinstance(data, str):
        with open(data, "rb") as fh:
            return fh.read()
    return bytes(data)


def example_digests(split) -> tuple[list[str], str]:
    """``(sha256 hex of every example, "files" | "arrays")``: file bytes for file sources (image
    folders, archives, lists), else each array row's raw bytes (a document's UTF-8 text)."""
    items = getattr(split, "items", None)
    if items is not None:  # ImageFileSplit: the files as stored
        try:
            return [hashlib.sha256(_file_bytes(it)).hexdigest() for it in items], "files"
        except OSError as e:
            raise OTReweightError(f"cannot read {getattr(e, 'filename', None) or 'a data file'} ({e.strerror or e}); "
                                  "check the data folder") from None
    x = split.arrays()[0] if hasattr(split, "arrays") else None
    if x is None:  # another lazy split: the raw example as its source gives it
        rows = (np.asarray(split[i][0]) for i in range(len(split)))
    elif x.dtype == object:
        return [hashlib.sha256(str(t).encode("utf-8")).hexdigest() for t in x], "arrays"
    else:
        rows = iter(x)
    out = []
    for r in rows:
        r = np.ascontiguousarray(r)
        h = hashlib.sha256(f"{r.dtype.str}{r.shape}".encode())
        h.update(r.tobytes())
        out.append(h.hexdigest())
    return out, "arrays"


def example_paths(split) -> tuple[list[str] | None, bool]:
    """``(paths or None, keyed)``: each example's path, and whether paths identify examples (one file
    each: image folders, archives, lists, text class folders) rather than rows of one file."""
    paths = getattr(split, "paths", None)
    if paths is not None:
        return list(paths), True
    names = getattr(split, "names", None)
    if names is not None:
        names = list(names)
        return names, all(":" not in n for n in names)
    return None, False


# ----------------------------------------------------------------------------- the table
@dataclass
class SplitTable:
    """A split file in memory: per pool, every example's role, label, class name, path and sha256, by id."""

    header: dict
    pools: dict = field(default_factory=dict)  # pool -> {"role", "label", "class", "path", "sha256"}: lists by id

    @property
    def classes(self) -> list:
        return list(self.header["classes"])

    @property
    def given_val(self) -> bool:
        return self.header["split"].get("validation") == "given"

    def data_sha256(self) -> str:
        """sha256 over ``pool id label sha256`` of every example, in file order."""
        h = hashlib.sha256()
        for pool in POOLS:
            p = self.pools.get(pool)
            if p is None:
                continue
            for i, (lab, sha) in enumerate(zip(p["label"], p["sha256"])):
                h.update(f"{pool} {i} {lab} {sha}\n".encode())
        return h.hexdigest()

    def long_tail_split(self) -> LongTailSplit:
        """The :class:`LongTailSplit` the file describes (indices into the training pool)."""
        p, k = self.pools["train"], len(self.classes)
        roles, labels = np.asarray(p["role"]), np.asarray(p["label"], dtype=np.int64)

        def ids(role):
            return np.flatnonzero(roles == role).astype(np.int64)

        def counts(role):
            return np.bincount(labels[roles == role], minlength=k).astype(np.int64)

        s = self.header["split"]
        val_counts = (np.bincount(np.asarray(self.pools["val"]["label"], dtype=np.int64), minlength=k)
                      if self.given_val else counts("val"))
        return LongTailSplit(
            train=ids("train"), meta=ids("meta"), val=ids("val") if not self.given_val else np.zeros(0, np.int64),
            train_counts=counts("train"), meta_counts=counts("meta"), val_counts=val_counts.astype(np.int64),
            imbalance_factor=float(s.get("imbalance_factor", 1.0)), profile=str(s.get("profile", "given")),
            n_max=int(s.get("n_max", 0)), seed=int(s.get("seed", 0)), class_order=list(s.get("class_order") or []),
        )


def _data_pools(pool, test, given_val) -> dict:
    return {"train": pool, **({"val": given_val} if given_val is not None else {}), "test": test}


def build_table(split: LongTailSplit, pool, test, given_val, classes: list, data_section: dict) -> SplitTable:
    """The split file of ``split`` over the source's pools (the training pool, its own validation
    file or None, the test split): every example, its role, label, path and digest."""
    roles = np.full(len(pool), "unused", dtype=object)
    roles[split.train], roles[split.meta] = "train", "meta"
    if given_val is None:
        roles[split.val] = "val"
    pools, kinds, keyed = {}, set(), True
    for name, data in _data_pools(pool, test, given_val).items():
        digests, kind = example_digests(data)
        paths, by_path = example_paths(data)
        kinds.add(kind)
        keyed &= by_path
        labels = np.asarray(data.labels, dtype=np.int64)
        role = list(roles) if name == "train" else [name] * len(labels)
        pools[name] = {"role": role, "label": labels.tolist(), "class": [classes[c] for c in labels],
                       "path": paths if paths is not None else ["-"] * len(labels), "sha256": digests}
        for text in [*pools[name]["path"], *classes]:
            if any(ch in str(text) for ch in "\t\n\r"):
                raise OTReweightError(f"{text!r} holds a tab or line break, which a split file cannot hold; rename it")
    header = {
        "format": FORMAT,
        "data_sha256": "",
        "hashes": "files" if kinds == {"files"} else "arrays",
        "keys": "path" if keyed else "id",
        "classes": list(classes),
        "split": {"profile": split.profile, "imbalance_factor": split.imbalance_factor, "n_max": split.n_max,
                  "seed": split.seed, "class_order": list(split.class_order),
                  "validation": "given" if given_val is not None else "drawn"},
        "data": {k: v for k, v in data_section.items() if k != "split_file"},
    }
    table = SplitTable(header, pools)
    header["data_sha256"] = table.data_sha256()
    return table


def write_split_file(path, table: SplitTable) -> str:
    """Write ``table`` atomically as a split file; returns the file's sha256."""
    from ..utils import atomic_save

    lines = [f"# {FORMAT}"]
    lines += [f"# {k}\t{json.dumps(v, default=_plain)}" for k, v in table.header.items() if k != "format"]
    lines.append("\t".join(COLUMNS))
    for name in POOLS:
        p = table.pools.get(name)
        if p is None:
            continue
        for i in range(len(p["label"])):
            lines.append(f"{p['role'][i]}\t{i}\t{p['label'][i]}\t{p['class'][i]}\t{p['path'][i]}\t{p['sha256'][i]}")
    text = "\n".join(lines) + "\n"
    atomic_save(text, Path(path))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, np.ndarray)):
        return list(o)
    raise TypeError(type(o).__name__)


def file_sha256(path) -> str:
    """sha256 of a file's bytes."""
    return file_digest(path)


def _read_text(path: Path) -> str:
    """The split file's text, or one line saying why it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise OTReweightError(f"split file {path} does not exist; write one with `otreweight split --config ... "
                              "--output <file>`") from None
    except IsADirectoryError:
        raise OTReweightError(f"split file {path} is a folder; give the file `otreweight split` wrote") from None
    except OSError as e:
        raise OTReweightError(f"cannot read split file {path} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise OTReweightError(f"split file {path} is not UTF-8 text; give a file written by `otreweight split`") from None


def read_split_file(path) -> SplitTable:
    """Read and check a split file; any problem is one line naming the file and the line."""
    path = Path(path).expanduser()
    text = _read_text(path)

    def bad(n, what):
        return OTReweightError(f"split file {path} line {n}: {what}; write it again with `otreweight split`")

    lines = text.splitlines()
    if not lines or lines[0].strip() != f"# {FORMAT}":
        raise bad(1, f"it does not start with '# {FORMAT}' (not a split file of this version)")
    header, n = {"format": FORMAT}, 1
    while n < len(lines) and lines[n].startswith("#"):
        key, tab, value = lines[n][1:].strip().partition("\t")
        if not tab:
            raise bad(n + 1, "a header line is not '# key<TAB>JSON'")
        try:
            header[key] = json.loads(value)
        except ValueError:
            raise bad(n + 1, f"the value of {key!r} is not JSON") from None
        n += 1
    for key, kind in (("data_sha256", str), ("classes", list), ("split", dict), ("hashes", str), ("keys", str)):
        if not isinstance(header.get(key), kind):
            raise bad(n, f"the header lacks {key!r}")
    if n >= len(lines) or tuple(lines[n].split("\t")) != COLUMNS:
        raise bad(n + 1, f"expected the column line {' '.join(COLUMNS)!r}")
    classes = [str(c) for c in header["classes"]]
    given = header["split"].get("validation") == "given"
    rows: dict = {}
    for n in range(n + 1, len(lines)):
        line = lines[n]
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(COLUMNS):
            raise bad(n + 1, f"{len(parts)} fields, expected {len(COLUMNS)} ({', '.join(COLUMNS)})")
        role, sid, slab, cls, p, sha = parts
        if role not in ROLES:
            raise bad(n + 1, f"role {role!r} is not one of {', '.join(ROLES)}")
        if not (sid.isdigit() and slab.isdigit()):
            raise bad(n + 1, f"id {sid!r} and label {slab!r} must be integers >= 0")
        lab = int(slab)
        if lab >= len(classes) or classes[lab] != cls:
            raise bad(n + 1, f"label {lab} / class {cls!r} does not match the header's classes")
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise bad(n + 1, "the sha256 is not 64 hex digits")
        pool = _pool_of(role, given)
        if role == "unused" and pool != "train":
            raise bad(n + 1, "role unused belongs to the training pool")
        got = rows.setdefault(pool, {})
        if int(sid) in got:
            raise bad(n + 1, f"id {sid} of the {pool} pool is listed twice")
        got[int(sid)] = (role, lab, cls, p, sha)
    if "train" not in rows or "test" not in rows or (given and "val" not in rows):
        raise bad(len(lines), "it lists no " + ("training-pool" if "train" not in rows else "test" if "test" not in rows
                                                 else "validation") + " examples")
    pools = {}
    for pool, got in rows.items():
        if max(got) != len(got) - 1:
            first = next(i for i in range(len(got)) if i not in got)
            raise bad(len(lines), f"id {first} of the {pool} pool is missing (ids must run 0..N-1)")
        cols = list(zip(*(got[i] for i in range(len(got)))))
        pools[pool] = {"role": list(cols[0]), "label": list(cols[1]), "class": list(cols[2]), "path": list(cols[3]),
                       "sha256": list(cols[4])}
    table = SplitTable(header, pools)
    if table.data_sha256() != header["data_sha256"]:
        raise OTReweightError(f"split file {path}: its data_sha256 does not match its lines (edited by hand?); "
                              "write it again with `otreweight split`")
    if not any(r == "train" for r in pools["train"]["role"]):
        raise OTReweightError(f"split file {path} gives no example the role train")
    return table


# ----------------------------------------------------------------------------- checks
def _pools_of_data(table: SplitTable, pool, test, given_val, classes) -> dict:
    if table.given_val != (given_val is not None):
        have = "its own validation file" if given_val is not None else "no validation file"
        raise OTReweightError(f"the split file was written for a source {'with' if table.given_val else 'without'} its own "
                              f"validation file, but this source has {have}; use a split file written for these data")
    return _data_pools(pool, test, given_val)


def check_against(table: SplitTable, pool, test, given_val, classes: list, where: str = "the split file") -> LongTailSplit:
    """The split of ``table`` after checking it against the data; the first mismatch is one line."""
    hint = "; run `otreweight data verify` for every difference, or write a new split file with `otreweight split`"
    if list(classes) != table.classes:
        raise OTReweightError(f"{where} lists classes {table.classes[:5]}... but the data have "
                              f"{list(classes)[:5]}...{hint}" if max(len(classes), len(table.classes)) > 5 else
                              f"{where} lists classes {table.classes} but the data have {list(classes)}{hint}")
    for name, data in _pools_of_data(table, pool, test, given_val, classes).items():
        p = table.pools[name]
        n_file, n_data = len(p["label"]), len(data)
        if n_file != n_data:
            raise OTReweightError(f"{where} lists {n_file} examples of the {name} pool but the data hold {n_data}{hint}")
        labels = np.asarray(data.labels, dtype=np.int64)
        diff = np.flatnonzero(labels != np.asarray(p["label"], dtype=np.int64))
        if diff.size:
            i = int(diff[0])
            raise OTReweightError(f"{where}: id {i} of the {name} pool ({p['path'][i]}) is class {p['class'][i]!r} "
                                  f"there but {classes[labels[i]]!r} in the data{hint}")
        paths, _ = example_paths(data)
        if paths is not None and all(q != "-" for q in p["path"]):
            i = next((i for i, (a, b) in enumerate(zip(p["path"], paths)) if a != b), None)
            if i is not None:
                raise OTReweightError(f"{where}: id {i} of the {name} pool is {p['path'][i]} there but {paths[i]} "
                                      f"in the data{hint}")
        if table.header["hashes"] == "arrays" and getattr(data, "items", None) is None and hasattr(data, "arrays"):
            digests, _ = example_digests(data)
            i = next((i for i, (a, b) in enumerate(zip(p["sha256"], digests)) if a != b), None)
            if i is not None:
                raise OTReweightError(f"{where}: the bytes of id {i} of the {name} pool ({p['path'][i]}) changed{hint}")
    return table.long_tail_split()


def verify(table: SplitTable, pool, test, given_val, classes: list) -> list[str]:
    """Every difference between the data and ``table``, one line each (empty: they match)."""
    problems = []
    if list(classes) != table.classes:
        problems.append(f"classes: the split file has {', '.join(table.classes)}; the data have {', '.join(classes)}")
    for name, data in _pools_of_data(table, pool, test, given_val, classes).items():
        p = table.pools[name]
        digests, kind = example_digests(data)
        paths, keyed = example_paths(data)
        labels = np.asarray(data.labels, dtype=np.int64)
        if kind != table.header["hashes"]:
            problems.append(f"{name} pool: the split file holds digests of {table.header['hashes']}, the data are "
                            f"{kind} (another kind of source): bytes cannot be compared")
        have = [(paths[i] if paths is not None else "-", classes[labels[i]], digests[i]) for i in range(len(labels))]
        want = [(p["path"][i], p["class"][i], p["sha256"][i]) for i in range(len(p["label"]))]
        by_path = keyed and table.header["keys"] == "path"
        key_of = (lambda i, row: row[0]) if by_path else (lambda i, row: i)
        h = {key_of(i, r): (i, r) for i, r in enumerate(have)}
        w = {key_of(i, r): (i, r) for i, r in enumerate(want)}

        def show(key, i, row):
            return f"{row[0]} (id {i})" if by_path or row[0] != "-" else f"id {i}"

        missing = [k for k in w if k not in h]
        extra = [k for k in h if k not in w]
        moved = {}
        if by_path:  # a file found under another class: the same bytes, another path
            spare = {}
            for k in extra:
                spare.setdefault(h[k][1][2], []).append(k)
            for k in missing:
                cands = spare.get(w[k][1][2])
                if cands:
                    moved[k] = cands.pop(0)
        for k in missing:
            i, row = w[k]
            if k in moved:
                j, new = h[moved[k]]
                problems.append(f"wrong label: {name} pool {row[0]} (class {row[1]}, {p['role'][i]}) is {new[0]} "
                                f"(class {new[1]}) in the data")
            else:
                problems.append(f"missing: {name} pool {show(k, i, row)}, class {row[1]}, {p['role'][i]}")
        taken = set(moved.values())
        for k in extra:
            if k not in taken:
                i, row = h[k]
                problems.append(f"extra: {name} pool {show(k, i, row)}, class {row[1]}, not in the split file")
        shifted = []
        for k in w:
            if k not in h:
                continue
            (i, want_row), (j, have_row) = w[k], h[k]
            if want_row[1] != have_row[1]:
                problems.append(f"wrong label: {name} pool {show(k, i, want_row)} is class {want_row[1]} in the split "
                                f"file but {have_row[1]} in the data")
            if want_row[2] != have_row[2] and kind == table.header["hashes"]:
                problems.append(f"changed bytes: {name} pool {show(k, i, want_row)} (sha256 {have_row[2][:12]}..., "
                                f"split file {want_row[2][:12]}...)")
            if by_path and i != j:
                shifted.append((want_row[0], i, j))
        if shifted:  # ids are rows: a run would take other examples for the roles of these ids
            f, i, j = shifted[0]
            problems.append(f"ids: {len(shifted)} files of the {name} pool have other ids in the data than in the "
                            f"split file (first: {f}, id {i} there, {j} here), as files were added or removed")
        k = len(table.classes)
        c_file = {c: 0 for c in table.classes}
        for c in p["class"]:
            c_file[c] = c_file.get(c, 0) + 1
        c_data = {c: 0 for c in classes}
        for c in labels:
            c_data[classes[c]] += 1
        for c in list(dict.fromkeys([*table.classes, *classes]))[: max(k, len(classes))]:
            if c_file.get(c, 0) != c_data.get(c, 0):
                problems.append(f"count: {name} pool class {c}: {c_data.get(c, 0)} examples in the data, "
                                f"{c_file.get(c, 0)} in the split file")
    return problems
