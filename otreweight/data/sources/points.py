"""Point-cloud classification data as users have them; every source gives float32 ``(N, P, D)`` clouds.

Registered sources (``data.source``, with the data folder as ``data.root`` and the options below
as ``data.source_options``):

``modelnet``
    ModelNet10 / ModelNet40 mesh trees, ``<class>/train/*.off`` and ``<class>/test/*.off`` (also
    ``train/<class>/*.off``). Every mesh is read by a small OFF parser (it accepts the files of
    the official release whose first line runs into the counts, ``OFF490 518 0``; polygons are
    fanned into triangles), then ``n_points`` points are drawn on its surface by ``trimesh``
    (:func:`trimesh.sample.sample_surface`: a face with probability proportional to its area, a
    uniform point in it), seeded per shape by ``(seed, split, index)``. With ``normals: true`` the
    normal of the sampled face is appended (``D = 6``). The sampled clouds are cached (one
    ``.npz`` keyed by the tree's files, ``n_points``, ``normals`` and ``seed``): a data set is
    sampled once.
``modelnet_h5``
    The HDF5 release (``ply_data_train*.h5`` / ``ply_data_test*.h5`` with ``data`` ``(N, 2048, 3)``
    and ``label`` ``(N, 1)``, optionally ``normal``; class names from ``shape_names.txt``), read
    with ``h5py``.
``point_folder``
    Point sets in class folders, ``train/<class>/*`` and ``test/<class>/*`` (or
    ``<class>/train/*``): ``.npy`` arrays ``(P, D)`` or text files of one ``x y z [nx ny nz]`` point
    per line (spaces or commas).
``mnist_points``
    MNIST digits as 2-D point sets (PointNet's MNIST experiment): the ``(x, y)`` pixel coordinates
    (``y`` pointing up) of the pixels brighter than ``threshold`` (default 128), read from the
    official IDX files (``train-images-idx3-ubyte[.gz]`` ... in ``root``).

A cloud of ``m`` points becomes one of exactly ``n_points`` (every source, the same rule): with
``m >= n_points`` a seeded draw without replacement; with ``m < n_points``, ``short: replace``
(the default) keeps all ``m`` points and draws the ``n_points - m`` others again from them (with
replacement; max pooling over a set is unchanged by repeated points), ``short: refuse`` stops
with one line naming the shape. Bad input is one line naming the file: a mesh without faces or of
zero area, NaN / inf coordinates, an OFF header that does not parse, an ``.h5`` without ``data`` or
``label``, a class folder without shapes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .cache import _cache_path, _fingerprint, _read_cache, _resolve_cache_dir, _write_cache
from .arrays import ArraySplits, DataError
from .download import read_maybe_gzip
from .registry import register_source

__all__ = ["PointDataset", "fit_points", "load_mnist_points", "load_modelnet", "load_modelnet_h5",
           "load_point_folder", "read_off", "sample_mesh"]

SHORT_RULES = ("replace", "refuse")
_CACHE_VERSION = "otreweight-points-v1"


class PointDataset(ArraySplits):
    """Labelled train / test point clouds ``(N, P, D)`` float32 with class names; modality ``points``."""

    modality = "points"

    def __init__(self, x_train, y_train, x_test, y_test, classes, name: str) -> None:
        self.x_train = np.ascontiguousarray(x_train, dtype=np.float32)
        self.x_test = np.ascontiguousarray(x_test, dtype=np.float32)
        self.y_train = np.asarray(y_train, dtype=np.int64)
        self.y_test = np.asarray(y_test, dtype=np.int64)
        self.classes, self.name = [str(c) for c in classes], name
        if len(self.x_train) == 0:
            raise DataError(f"{name}: the training split holds no shape")
        for which in ("train", "test"):
            x, y = getattr(self, f"x_{which}"), getattr(self, f"y_{which}")
            if x.ndim != 3 or len(x) != len(y):
                raise DataError(f"{name}: {which} clouds have shape {x.shape} for {len(y)} labels; "
                                "expected (N, P, D) with one label per cloud")
            bad = np.flatnonzero((y < 0) | (y >= len(self.classes)))
            if bad.size:
                raise DataError(f"{name}: {which} label {int(y[bad[0]])} (cloud {int(bad[0])}; {bad.size} such) is "
                                f"outside 0..{len(self.classes) - 1}")
        if len(self.x_test) and self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise DataError(f"{name}: train clouds are {self.x_train.shape[1:]} but test clouds "
                            f"{self.x_test.shape[1:]}; both splits need the same points per cloud and dims")


# ----------------------------------------------------------------------------- shared rules
def _check_n_points(n_points) -> int:
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise DataError(f"n_points must be an integer >= 1, got {n_points!r}")
    return int(n_points)


def _check_short(short: str) -> str:
    if short not in SHORT_RULES:
        raise DataError(f"short must be one of {', '.join(SHORT_RULES)} (what to do with a cloud of fewer than "
                        f"n_points points), got {short!r}")
    return short


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one shape: seeded by (seed, split, index), so any shape can be redrawn alone."""
    return np.random.default_rng([int(seed), 0 if split == "train" else 1, int(index)])


def fit_points(points: np.ndarray, n_points: int, rng: np.random.Generator, short: str = "replace",
               where: str = "a cloud") -> np.ndarray:
    """``points`` ``(m, D)`` -> exactly ``n_points`` rows (see the module docstring for the rule)."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[0] == 0:
        raise DataError(f"{where} holds no point (shape {pts.shape}); remove it")
    if not np.isfinite(pts).all():
        raise DataError(f"{where} has NaN or inf coordinates; fix or remove the shape")
    m = pts.shape[0]
    if m >= n_points:
        return pts[np.sort(rng.choice(m, n_points, replace=False))]
    if short == "refuse":
        raise DataError(f"{where} has {m} points, fewer than n_points={n_points}; lower n_points or set "
                        "short: replace (repeat points drawn with replacement)")
    extra = rng.integers(0, m, n_points - m)
    return np.concatenate([pts, pts[extra]])


def _cached(prefix: str, root: Path, cache_dir, options: tuple, build):
    """The dataset ``build()`` gives, cached under a key of ``root``'s files and ``options``."""
    path = _cache_path(_resolve_cache_dir(cache_dir), prefix, _fingerprint(root), *options)
    ds = _read_cache(path, PointDataset, _CACHE_VERSION, errors=(DataError,))
    if ds is None:
        ds = build()
        _write_cache(path, ds, _CACHE_VERSION, "shapes will be sampled again next time")
    return ds


def _class_files(root: Path, suffixes: tuple[str, ...], what: str) -> tuple[list[str], dict]:
    """Class names and ``{split: [(path, class index), ...]}`` of a tree laid out as
    ``<class>/<split>/*`` (ModelNet) or ``<split>/<class>/*``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{what} folder {root} does not exist; set data.root to the folder with the classes")

    def listed(folder: Path) -> list[Path]:
        return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in suffixes
                      and not f.name.startswith("."))

    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if (root / "train").is_dir():  # <split>/<class>/*
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
        folders = {s: {c: root / s / c for c in classes} for s in ("train", "test")}
    else:  # <class>/<split>/*
        classes = [d.name for d in subdirs if (d / "train").is_dir() or (d / "test").is_dir()]
        folders = {s: {c: root / c / s for c in classes} for s in ("train", "test")}
    if not classes:
        raise DataError(f"{root} holds no class folders (<class>/train/*{suffixes[0]} or train/<class>/*{suffixes[0]})")
    if (root / "train").is_dir() and (root / "test").is_dir():
        extra = sorted(d.name for d in (root / "test").iterdir() if d.is_dir() and not d.name.startswith(".")
                       and d.name not in classes)
        if extra:
            shapes = sum(len(listed(root / "test" / c)) for c in extra)
            raise DataError(f"{root}/test holds {len(extra)} class folder(s) that train/ lacks ({', '.join(extra[:5])}"
                            f"{', ...' if len(extra) > 5 else ''}; {shapes} test shapes): a model cannot learn them; "
                            "add their training shapes or remove them from test/")
    files: dict = {"train": [], "test": []}
    for s in ("train", "test"):
        for k, c in enumerate(classes):
            folder = folders[s][c]
            found = listed(folder) if folder.is_dir() else []
            if s == "train" and not found:
                raise DataError(f"class folder {folder} holds no shape ({'/'.join(suffixes)}); add shapes or "
                                "remove the class")
            files[s].extend((f, k) for f in found)
    return classes, files


# ----------------------------------------------------------------------------- meshes (.off)
def read_off(path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` float64 and triangles ``(F, 3)`` int64 of an OFF file.

    The header is ``OFF`` then ``V F E`` on the next line, or on the same line, also run into the
    keyword (``OFF490 518 0``, as in ModelNet's files); ``#`` starts a comment. Then one vertex
    ``x y z`` per line and one face ``n i1 .. in [colour]`` per line; a face with ``n > 3`` is split
    into the fan ``(i1, ik, ik+1)``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e})") from None
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().startswith("OFF"):
        raise DataError(f"{path} does not start with an OFF header; give a mesh in OFF format")
    head, pos = lines[0][3:].split(), 1
    while len(head) < 3 and pos < len(lines):  # the counts on the next line(s)
        head += lines[pos].split()
        pos += 1
    try:
        nv, nf, _ = (int(t) for t in head[:3])
        if len(head) != 3:
            raise ValueError
    except ValueError:
        raise DataError(f"{path}: the OFF header does not parse (expected 'OFF' then the vertex, face and edge "
                        f"counts, got {' '.join(lines[0:2])[:60]!r}); fix the file's first lines") from None
    if nv < 0 or nf < 0:
        raise DataError(f"{path}: the OFF header gives negative counts ({nv} vertices, {nf} faces)")
    vlines, flines = lines[pos: pos + nv], lines[pos + nv: pos + nv + nf]
    if len(vlines) < nv or len(flines) < nf:
        raise DataError(f"{path}: the header announces {nv} vertices and {nf} faces but the file holds fewer "
                        "lines; the file is cut short")
    try:
        flat = np.asarray(" ".join(vlines).split(), dtype=np.float64)
        verts = flat.reshape(nv, 3) if flat.size == 3 * nv else np.asarray(
            [ln.split()[:3] for ln in vlines], dtype=np.float64).reshape(nv, 3)
    except ValueError:
        raise DataError(f"{path}: a vertex line does not hold three numbers") from None
    tokens = [ln.split() for ln in flines]
    try:
        if nf and len({len(t) for t in tokens}) == 1:  # every face line alike (ModelNet: "3 a b c"): one table
            table = np.asarray(tokens, dtype=np.float64)
            k = int(table[0, 0])
            if (table[:, 0] == k).all() and 3 <= k <= table.shape[1] - 1:
                idx = table[:, 1: 1 + k].astype(np.int64)
                if idx.min() < 0 or idx.max() >= nv:
                    raise DataError(f"{path}: a face refers to vertex {int(idx.max())}, but the mesh has {nv}")
                faces = np.concatenate([np.stack([idx[:, 0], idx[:, j], idx[:, j + 1]], 1) for j in range(1, k - 1)])
                return verts, faces.astype(np.int64)
        rows = [np.asarray(t, dtype=np.float64) for t in tokens]
    except DataError:
        raise
    except ValueError:
        raise DataError(f"{path}: a face line holds something that is not a number") from None
    tris = []
    for n, r in enumerate(rows):
        k = int(r[0]) if r.size else 0
        if k < 3 or r.size < 1 + k:
            raise DataError(f"{path}: face {n} has {k} vertices (at least 3 needed) or is cut short")
        idx = r[1: 1 + k].astype(np.int64)
        if idx.min() < 0 or idx.max() >= nv:
            raise DataError(f"{path}: face {n} refers to vertex {int(idx.max())}, but the mesh has {nv}")
        tris.append(np.stack([np.full(k - 2, idx[0]), idx[1:-1], idx[2:]], axis=1))
    faces = np.concatenate(tris).astype(np.int64) if tris else np.zeros((0, 3), np.int64)
    return verts, faces


def sample_mesh(verts: np.ndarray, faces: np.ndarray, n_points: int, rng: np.random.Generator,
                normals: bool = False, where: str = "a mesh") -> np.ndarray:
    """``n_points`` points drawn on the surface (area-weighted, by trimesh), ``(n, 3)`` or ``(n, 6)``."""
    import trimesh

    if len(faces) == 0:
        raise DataError(f"{where} has no faces; point clouds are sampled on the surface, so give a mesh with faces")
    if not np.isfinite(verts).all():
        raise DataError(f"{where} has NaN or inf vertex coordinates; fix or remove the mesh")
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False, validate=False)
    if not float(mesh.area) > 0:
        raise DataError(f"{where} has zero surface area; no point can be sampled on it (remove the mesh)")
    pts, face_idx = trimesh.sample.sample_surface(mesh, int(n_points), seed=rng)
    out = np.asarray(pts, dtype=np.float32)
    if normals:
        out = np.concatenate([out, np.asarray(mesh.face_normals[face_idx], dtype=np.float32)], axis=1)
    return out


def _require(module: str, extra: str = "points"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"point-cloud data need {module}: pip install 'otreweight[{extra}]' (or pip install "
                        f"{module})") from None


def _sample_file(job) -> np.ndarray:
    """One mesh file -> its sampled cloud (a top-level function: it runs in worker processes)."""
    path, n_points, seed, split, index, normals = job
    return sample_mesh(*read_off(path), n_points, _rng(seed, split, index), normals, where=str(path))


def _workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers must be an integer >= 0 (0: sample in this process), got {workers!r}")
    return workers


def load_modelnet(root, n_points: int = 1024, normals: bool = False, seed: int = 0, cache_dir=None,
                  workers: int = 0) -> PointDataset:
    """A ModelNet ``.off`` tree as point clouds (see the module docstring); sampled once, then cached.

    ``workers`` > 1 processes parse and sample the meshes (started with ``spawn``: each imports
    otreweight and torch, seconds of start-up, so it pays only for thousands of large meshes on
    many cores; default 0: in this process). Each shape's generator is seeded by
    ``(seed, split, index)``, so the clouds do not depend on ``workers``.
    """
    _require("trimesh")
    n_points = _check_n_points(n_points)
    root = Path(root).expanduser().absolute()
    classes, files = _class_files(root, (".off",), "ModelNet")
    n_workers = _workers(workers)

    def build() -> PointDataset:
        out = {}
        pool = None
        if n_workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            for s in ("train", "test"):
                jobs = [(f, n_points, int(seed), s, i, bool(normals)) for i, (f, _) in enumerate(files[s])]
                xs = list(pool.map(_sample_file, jobs, chunksize=16)) if pool else [_sample_file(j) for j in jobs]
                out[s] = (np.stack(xs) if xs else np.zeros((0, n_points, 6 if normals else 3), np.float32),
                          np.asarray([k for _, k in files[s]], dtype=np.int64))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return PointDataset(*out["train"], *out["test"], classes, f"modelnet:{root}")

    return _cached("modelnet", root, cache_dir, (n_points, bool(normals), int(seed)), build)


# ----------------------------------------------------------------------------- HDF5 release
def load_modelnet_h5(root, n_points: int = 1024, normals: bool = False, seed: int = 0, short: str = "replace",
                     cache_dir=None) -> PointDataset:
    """The HDF5 release (``ply_data_{train,test}*.h5``, ``shape_names.txt``) read with h5py."""
    h5py = _require("h5py")
    n_points, short = _check_n_points(n_points), _check_short(short)
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"HDF5 folder {root} does not exist; set data.root to the folder with ply_data_train*.h5")
    found = {s: sorted(root.glob(f"ply_data_{s}*.h5")) for s in ("train", "test")}
    if not found["train"]:
        raise DataError(f"{root} holds no ply_data_train*.h5; give the folder of the HDF5 release")
    parts: dict = {"train": ([], []), "test": ([], [])}
    for s, paths in found.items():
        for p in paths:
            try:
                with h5py.File(p, "r") as f:
                    missing = [k for k in ("data", "label") if k not in f]
                    if missing:
                        raise DataError(f"{p} has no {' or '.join(missing)} dataset; the release's files hold "
                                        f"data (N, P, 3) and label (N, 1) (keys here: {', '.join(f.keys()) or 'none'})")
                    if normals and "normal" not in f:
                        raise DataError(f"{p} has no normal dataset; set normals: false")
                    data = np.asarray(f["data"], dtype=np.float32)
                    if normals:
                        data = np.concatenate([data, np.asarray(f["normal"], dtype=np.float32)], axis=-1)
                    label = np.asarray(f["label"]).reshape(-1)
            except DataError:
                raise
            except OSError as e:
                raise DataError(f"cannot read {p} as HDF5 ({e}); fetch the file again") from None
            if data.ndim != 3 or len(data) != len(label):
                raise DataError(f"{p}: data has shape {data.shape} for {len(label)} labels; expected (N, P, 3) "
                                "and one label per cloud")
            parts[s][0].append(data), parts[s][1].append(label.astype(np.int64))
    x = {s: np.concatenate(v[0]) if v[0] else np.zeros((0, n_points, 6 if normals else 3), np.float32)
         for s, v in parts.items()}
    y = {s: np.concatenate(v[1]) if v[1] else np.zeros(0, np.int64) for s, v in parts.items()}
    if not y["train"].size:
        raise DataError(f"{', '.join(p.name for p in found['train'])} in {root} hold no cloud; give the release's "
                        "training files")
    names_file = root / "shape_names.txt"
    k = int(max(y["train"].max(), y["test"].max() if y["test"].size else 0)) + 1
    if names_file.is_file():
        classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        if len(classes) < k:
            raise DataError(f"{names_file} names {len(classes)} classes but the labels go up to {k - 1}")
    else:
        classes = [str(i) for i in range(k)]
    out = {}
    for s in ("train", "test"):
        out[s] = np.stack([fit_points(c, n_points, _rng(seed, s, i), short, where=f"{s} cloud {i} of {root}")
                           for i, c in enumerate(x[s])]) if len(x[s]) else x[s][:, :n_points]
    return PointDataset(out["train"], y["train"], out["test"], y["test"], classes, f"modelnet_h5:{root}")


# ----------------------------------------------------------------------------- point-set folders
def read_point_file(path) -> np.ndarray:
    """One point set: an ``.npy`` array ``(P, D)`` or a text file of ``x y z [nx ny nz]`` lines."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            pts = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8").replace(",", " ")
            rows = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            widths = {len(r) for r in rows}
            if len(widths) > 1:
                raise DataError(f"{path}: lines hold {sorted(widths)} numbers; give x y z [nx ny nz] on every line")
            pts = np.asarray(rows, dtype=np.float32)
    except DataError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read points from {path} ({e}); give x y z [nx ny nz] per line or an .npy (P, D)") from None
    pts = np.asarray(pts, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise DataError(f"{path} holds an array of shape {pts.shape}; a point set is (P, D) with D >= 2")
    return pts


def load_point_folder(root, n_points: int = 1024, seed: int = 0, short: str = "replace", cache_dir=None) -> PointDataset:
    """Point sets in class folders (see the module docstring); read once, then cached."""
    n_points, short = _check_n_points(n_points), _check_short(short)
    root = Path(root).expanduser().absolute()
    classes, files = _class_files(root, (".npy", ".txt", ".xyz", ".pts"), "point-set")

    def build() -> PointDataset:
        out, dims = {}, None
        for s in ("train", "test"):
            xs = []
            for i, (f, _) in enumerate(files[s]):
                pts = fit_points(read_point_file(f), n_points, _rng(seed, s, i), short, where=str(f))
                if dims is None:
                    dims = pts.shape[1]
                if pts.shape[1] != dims:
                    raise DataError(f"{f} has {pts.shape[1]} numbers per point but the first file {dims}; "
                                    "give every file the same columns")
                xs.append(pts)
            out[s] = (np.stack(xs) if xs else np.zeros((0, n_points, dims or 3), np.float32),
                      np.asarray([k for _, k in files[s]], dtype=np.int64))
        return PointDataset(*out["train"], *out["test"], classes, f"point_folder:{root}")

    return _cached("pointfolder", root, cache_dir, (n_points, int(seed), short), build)


# ----------------------------------------------------------------------------- MNIST point sets
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    raw = read_maybe_gzip(path)
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(f"{path} is not an IDX file of {ndim}-d uint8 data (bad magic number); give the official "
                        "MNIST files")
    dims = struct.unpack(">" + "I" * ndim, raw[4: 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {body.size} values but its header announces {dims}; the file is cut short")
    return body.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} has no {stem}[.gz]; give the folder of the official MNIST IDX files")


def digits_to_points(images: np.ndarray, n_points: int, seed: int, split: str, threshold: int = 128,
                     short: str = "replace") -> np.ndarray:
    """``(N, H, W)`` uint8 digits -> ``(N, n_points, 2)`` float32 coordinates ``(col, H - 1 - row)``
    of the pixels brighter than ``threshold`` (seeded, :func:`fit_points`)."""
    out = np.empty((len(images), n_points, 2), dtype=np.float32)
    h = images.shape[1]
    for i, img in enumerate(images):
        rows, cols = np.nonzero(img > threshold)
        if rows.size == 0:
            raise DataError(f"{split} digit {i} has no pixel brighter than {threshold}; lower threshold")
        pts = np.stack([cols, h - 1 - rows], axis=1).astype(np.float32)
        out[i] = fit_points(pts, n_points, _rng(seed, split, i), short, where=f"{split} digit {i}")
    return out


def load_mnist_points(root, n_points: int = 256, threshold: int = 128, seed: int = 0, short: str = "replace",
                      cache_dir=None) -> PointDataset:
    """MNIST as 2-D point sets (see the module docstring); converted once, then cached."""
    n_points, short = _check_n_points(n_points), _check_short(short)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 0 <= threshold < 255:
        raise DataError(f"threshold must be an integer in 0..254, got {threshold!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"MNIST folder {root} does not exist; set data.root to the folder of the IDX files")
    paths = {"x_train": _idx_file(root, "train-images-idx3-ubyte"), "y_train": _idx_file(root, "train-labels-idx1-ubyte"),
             "x_test": _idx_file(root, "t10k-images-idx3-ubyte"), "y_test": _idx_file(root, "t10k-labels-idx1-ubyte")}

    def build() -> PointDataset:
        arrays = {k: _read_idx(p, 3 if k.startswith("x") else 1) for k, p in paths.items()}
        for s in ("train", "test"):
            if len(arrays[f"x_{s}"]) != len(arrays[f"y_{s}"]):
                raise DataError(f"{paths[f'x_{s}']} holds {len(arrays[f'x_{s}'])} images but {paths[f'y_{s}']} "
                                f"{len(arrays[f'y_{s}'])} labels")
            if arrays[f"y_{s}"].size and arrays[f"y_{s}"].max() > 9:
                raise DataError(f"{paths[f'y_{s}']} has label {int(arrays[f'y_{s}'].max())}; MNIST labels are 0..9")
        x = {s: digits_to_points(arrays[f"x_{s}"], n_points, seed, s, int(threshold), short) for s in ("train", "test")}
        return PointDataset(x["train"], arrays["y_train"], x["test"], arrays["y_test"], [str(i) for i in range(10)],
                            f"mnist_points:{root}")

    return _cached("mnistpoints", root, cache_dir, (n_points, int(threshold), int(seed), short), build)


# ----------------------------------------------------------------------------- registration
@register_source("modelnet")
def _modelnet(root, download=True, cache_dir=None, n_points: int = 1024, normals: bool = False, seed: int = 0,
              workers: int = 0):
    """A ModelNet10 / ModelNet40 tree of ``.off`` meshes as point clouds drawn on each surface, sampled once, then cached.

    Parameters
    ----------
    n_points : int
        Points drawn on each mesh surface (area-weighted).
    normals : bool
        Add each point's surface normal as three more coordinates.
    seed : int
        Seed of the sampling (each shape seeded by ``(seed, split, index)``).
    workers : int
        Processes that parse and sample the meshes (0: this process; pays only for thousands of large meshes).
    """
    return load_modelnet(root, n_points, normals, seed, cache_dir, workers)


@register_source("modelnet_h5")
def _modelnet_h5(root, download=True, cache_dir=None, n_points: int = 1024, normals: bool = False, seed: int = 0,
                 short: str = "replace"):
    """ModelNet's HDF5 release (``ply_data_{train,test}*.h5``), class names from ``shape_names.txt``.

    Parameters
    ----------
    n_points : int
        Points kept per cloud.
    normals : bool
        Keep the stored normals as three more coordinates.
    seed : int
        Seed of the choice of points.
    short : {"replace", "refuse"}
        A cloud with fewer than ``n_points`` points: repeat points drawn with replacement, or stop with an error.
    """
    return load_modelnet_h5(root, n_points, normals, seed, short, cache_dir)


@register_source("point_folder")
def _point_folder(root, download=True, cache_dir=None, n_points: int = 1024, seed: int = 0, short: str = "replace"):
    """Point clouds as ``.npy`` arrays or ``x y z [nx ny nz]`` text files in ``train/<class>/``, ``test/<class>/``.

    Parameters
    ----------
    n_points : int
        Points kept per cloud.
    seed : int
        Seed of the choice of points.
    short : {"replace", "refuse"}
        A cloud with fewer than ``n_points`` points: repeat points drawn with replacement, or stop with an error.
    """
    return load_point_folder(root, n_points, seed, short, cache_dir)


@register_source("mnist_points")
def _mnist_points(root, download=True, cache_dir=None, n_points: int = 256, threshold: int = 128, seed: int = 0,
                  short: str = "replace"):
    """MNIST digits as 2-D point sets: the coordinates of the pixels brighter than ``threshold`` (official IDX files in ``root``).

    Parameters
    ----------
    n_points : int
        Points per digit.
    threshold : int
        A pixel brighter than this (0..254) is a point.
    seed : int
        Seed of the choice of points.
    short : {"replace", "refuse"}
        A digit with fewer than ``n_points`` inked pixels: repeat points drawn with replacement, or stop with an error.
    """
    return load_mnist_points(root, n_points, threshold, seed, short, cache_dir)
