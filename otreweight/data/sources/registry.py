"""One registry of data sources, ``SOURCES``, and :func:`load_dataset`, which picks a source from a spec.

Every entry is called as ``fn(root=..., download=..., cache_dir=..., **kw)``
and returns a dataset.  Named sources (``"cifar10"``, ``"modelnet"``, ...) are
chosen by their bare name, case-insensitively.  *Path* sources, registered with
a ``sniff`` function, take a path as ``root`` and are chosen by a
``"<kind>:<path>"`` prefix or by asking their sniffers about the path, in
``order``; never by the bare name (``load_dataset("npz")`` means a path called
``npz``).  This module imports no source: each registers itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...registry import Registry
from .arrays import ArrayDataset, DataError

__all__ = ["SOURCES", "load_dataset", "path_sources", "register_source"]

SOURCES: Registry[ArrayDataset] = Registry("data source")


@dataclass(frozen=True)
class _PathKind:
    sniff: Callable[[Path], bool]
    order: float
    what: str | None
    seq: int


_PATH_KINDS: dict[str, _PathKind] = {}


def register_source(name: str, sniff: Callable[[Path], bool] | None = None, order: float = 50,
                    what: str | None = None):
    """Decorator registering a loader under ``name`` for :func:`load_dataset`.

    Parameters
    ----------
    name : str
        The source's name (case-insensitive).
    sniff : callable, optional
        ``sniff(path) -> bool`` makes this a path source: ``load_dataset(path)`` asks it whether
        ``path`` (a :class:`~pathlib.Path`, ``~`` expanded, not necessarily existing) is its data,
        and ``"<name>:<path>"`` selects it; without it the source is chosen by its bare name.
    order : float
        Where the sniffer is asked among the others, lowest first (``npz`` 10, ``text`` 50, the
        image ``folder`` fallback 100); ties in order of registration.
    what : str, optional
        How the path looks, for the unknown-dataset error (e.g. ``"a .npz file"``).

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """
    key = name.lower()

    def deco(fn):
        if key in SOURCES:
            raise ValueError(f"a data source named {name!r} is already registered")
        SOURCES.register(key)(fn)
        _PATH_KINDS.pop(key, None)  # a sniffer left by an earlier registration of this name (since removed)
        if sniff is not None:
            _PATH_KINDS[key] = _PathKind(sniff, order, what, len(_PATH_KINDS))
        return fn

    return deco


def path_sources() -> list[str]:
    """The registered path sources, in the order their sniffers are asked."""
    kinds = [(k, v) for k, v in _PATH_KINDS.items() if k in SOURCES]
    return [k for k, _ in sorted(kinds, key=lambda kv: (kv[1].order, kv[1].seq))]


def load_dataset(spec: str, root=None, download: bool = True, cache_dir=None, lazy: bool = False,
                 **kw) -> ArrayDataset:
    """Load a dataset by name or path.

    Parameters
    ----------
    spec : str
        A registered name (``"cifar10"``, ``"cifar100"``, see ``SOURCES``);
        ``"<kind>:<path>"`` for a path source (``npz``, ``text``, ``folder``, ...);
        or a path, given to the first path source whose sniffer claims it
        (a ``.npz`` file, a text data folder, else an image folder or archive).
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
    kinds = path_sources()
    if key in SOURCES and key not in kinds:
        return call(key, root=root)
    for kind in kinds:
        if spec.startswith(kind + ":"):
            return call(kind, root=spec[len(kind) + 1:])
    path = Path(spec).expanduser()
    for kind in kinds:
        if _PATH_KINDS[kind].sniff(path):
            return call(kind, root=path)
    named = sorted(n for n in SOURCES if n not in kinds)
    looks = [_PATH_KINDS[k].what for k in kinds if _PATH_KINDS[k].what]
    paths = "".join(f", {'or ' if i == len(looks) - 1 else ''}{w}" for i, w in enumerate(looks))
    raise DataError(f"unknown dataset {spec!r}: use one of {', '.join(named)}{paths}")
