"""One registry of data sources, ``SOURCES``, and :func:`load_dataset`, which picks a source from a spec.

Every entry is called as ``fn(root=..., download=..., cache_dir=..., **kw)``
and returns an :class:`ArrayDataset`.  Named datasets (``"cifar10"``,
``"cifar100"``, and whatever :func:`register_source` adds) are chosen by their
bare name, case-insensitively.  The kinds in :data:`PATH_SOURCES` (``"npz"``,
``"folder"``) take a path as ``root`` and are chosen by a ``"<kind>:<path>"``
prefix or by the path itself, never by the bare name: ``load_dataset("npz")``
still means a path called ``npz``.
"""

from __future__ import annotations

from pathlib import Path

from ...registry import Registry
from .dataset import ArrayDataset, DataError

__all__ = ["PATH_SOURCES", "SOURCES", "load_dataset", "register_source"]

SOURCES: Registry[ArrayDataset] = Registry("data source")

#: The entries of ``SOURCES`` that load a path given as ``root``, selected by
#: ``"<kind>:<path>"`` or by the path (``*.npz`` for ``"npz"``, else ``"folder"``).
PATH_SOURCES = ("npz", "text", "folder")


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
        if isinstance(SOURCES, Registry):
            SOURCES.register(key)(fn)
        else:  # a plain dict put in its place (tests swap in a copy)
            SOURCES[key] = fn
        return fn

    return deco


def load_dataset(spec: str, root=None, download: bool = True, cache_dir=None, lazy: bool = False,
                 **kw) -> ArrayDataset:
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
    lazy : bool
        Ask for a lazy dataset (listed, not decoded; examples decoded on demand by the streamed
        loader's workers) from sources that can give one (image folders and archives); sources that
        cannot load as usual.
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
    import inspect

    def call(kind, **args):
        fn = SOURCES[kind]
        params = inspect.signature(fn).parameters
        if lazy and "lazy" in params:
            args["lazy"] = True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kw) - set(params))
            if unknown:
                raise DataError(f"data source {kind!r} does not take {', '.join(unknown)}; remove it from the config")
        return fn(download=download, cache_dir=cache_dir, **args, **kw)

    spec = str(spec)
    key = spec.lower()
    if key in SOURCES and key not in PATH_SOURCES:
        return call(key, root=root)
    for kind in PATH_SOURCES:
        if spec.startswith(kind + ":"):
            return call(kind, root=spec[len(kind) + 1:])
    path = Path(spec).expanduser()
    if key.endswith(".npz"):
        return call("npz", root=path)
    if path.exists():
        from .text import find_text_files

        return call("text" if find_text_files(path) is not None else "folder", root=path)
    named = sorted(n for n in SOURCES if n not in PATH_SOURCES)
    raise DataError(f"unknown dataset {spec!r}: use one of {', '.join(named)}, "
                    "a .npz file, or an image folder / .tar.gz archive")
