"""Seeding and device selection."""
from __future__ import annotations

import random
import re

import numpy as np
import torch
import yaml

from ._errors import OTReweightError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise OTReweightError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OTReweightError(f"device {device!r} asked for but CUDA is not available; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OTReweightError(f"device {device!r} asked for but MPS is not available; use --device cpu or auto")
    return dev


def parse_assignment(item: str, flag: str, form: str = "KEY=VALUE", dotted: bool = False) -> tuple[str, object]:
    """One ``KEY=VALUE`` override (``--set``, ``--ot``, ``--method-set``): ``(KEY, VALUE parsed as YAML)``.

    One line ``<flag> expects <form>, got <item>`` when there is no ``=`` or no key (with
    ``dotted``: also when the key is not ``FIRST.REST``)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    first, dot, rest = key.partition(".")
    if not sep or not key or (dotted and not (dot and rest)):
        raise OTReweightError(f"{flag} expects {form}, got {item!r}")
    try:
        return key, load_yaml(value)
    except yaml.YAMLError as err:
        raise OTReweightError(f"{flag} {key}: the value is not valid YAML: {str(err).splitlines()[0]}") from None


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib``'s ``algorithm``), read in 1 MiB blocks."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path, write) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact: nothing the user had is lost.
    """
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_cause(err, path)
        if cause is not None and cause is not err:
            raise cause from None  # e.g. torch.save's RuntimeError around "No space left on device"
        raise


def _os_cause(err: BaseException, path):
    """The OS error behind ``err`` (its chain, or a full disk under a failed write), else None."""
    import errno
    import os

    e = err
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    if isinstance(err, RuntimeError) and "write" in str(err).lower():
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(path)))
            if st.f_bavail * st.f_frsize < 1 << 20:
                return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError:
            pass
    return None


def atomic_save(obj, path) -> None:
    """Atomically write ``obj`` to ``path``: text or bytes as they are, anything else with ``torch.save``."""
    if isinstance(obj, str):
        obj = obj.encode()
    atomic_write(path, (lambda fh: fh.write(obj)) if isinstance(obj, bytes) else (lambda fh: torch.save(obj, fh)))


def rng_state(gen: torch.Generator) -> dict:
    """Every random state a run depends on (for exact resumption), as tensors and plain Python values
    (loadable by ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "generator": gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(gen: torch.Generator, state: dict) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``2e-5`` (no dot) as a string; read it as the number everyone means. A key
    given twice in one mapping is an error naming it and its lines (PyYAML keeps the last silently);
    ``<<`` merges still override as YAML defines."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one", None)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader names it
                    continue
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str):
    """``yaml.safe_load`` that also reads exponent numbers without a dot (``1e-4``) as floats."""
    return yaml.load(text, Loader=_YamlLoader)


def show_progress(setting) -> bool:
    """Whether to draw progress bars: ``True`` / ``False`` as given; ``"auto"`` only when stderr is a
    terminal (a log file or a pipe gets the plain per-epoch lines, no carriage-return frames)."""
    if setting == "auto":
        import sys

        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return bool(setting)
