"""Field types and checks of the typed config: coercion of YAML values to a field's type (one-line
errors), the :class:`Section` base and the field metadata (recipe / resume / run)."""
from __future__ import annotations

import copy
import types
import typing
import warnings
from dataclasses import fields, is_dataclass
from typing import Any, Union

from .._errors import OTReweightError, check_choice, is_number

# Field metadata: RECIPE = copied between comparison variants; RESUME = a checkpoint must agree;
# RUN = set by the run for every stage (seed, thresholds), not a key of a stage's YAML.
RECIPE = {"recipe": True, "resume": True}
RESUME = {"resume": True}
RUN = {"run": True}
RUN_RESUME = {"run": True, "resume": True}

TRAINABLE = ("all", "classifier")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "linear")
SELECT_METRICS = ("accuracy", "balanced_accuracy", "gmean")
AMP_MODES = ("auto", "bf16", "none")
LR_SCALINGS = ("none", "linear", "sqrt")
PROFILES = ("exp", "step", "given")
STARTS = ("stage1", "scratch")
LOGGERS = ("tensorboard",)


# ----------------------------------------------------------------------------- type checks
def _type_name(hint) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"a list of {_type_name(args[0])[2:]}s" if args else "a list"
    if origin is list:
        inner = args[0] if args else None
        return f"a list of {inner.__name__} mappings" if is_dataclass(inner) else "a list"
    if origin is dict or hint is dict or is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _fail(key: str, value, hint) -> OTReweightError:
    what = "a mapping" if isinstance(value, dict) else ("a list" if isinstance(value, list) else repr(value))
    return OTReweightError(f"{key} must be {_type_name(hint)}, got {what}")


def coerce(value, hint, key: str):
    """``value`` checked against the type ``hint`` (integral floats become ints, a list of
    numbers a tuple); a one-line :class:`OTReweightError` naming ``key`` otherwise."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except OTReweightError:
                pass
        raise _fail(key, value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, value, hint)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(key, value, hint)
    if hint is float:
        if is_number(value):
            return value  # ints stay ints (as written), both are numbers
        raise _fail(key, value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _fail(key, value, hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, hint)
        return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, hint)
        inner = args[0]
        if is_dataclass(inner):
            return [v if isinstance(v, inner) else build(inner, v, f"{key}.{i}") for i, v in enumerate(value)]
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _fail(key, value, hint)
        return dict(value)
    if is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, key)
    return value


def yaml_fields(cls) -> list:
    """The fields of a config dataclass that are keys of its YAML section."""
    return [f for f in fields(cls) if not f.metadata.get("run")]


def build(cls, data, key: str = ""):
    """An instance of the config dataclass ``cls`` from a mapping, every value type-checked."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(key or cls.__name__, data, cls)
    known = {f.name: f for f in yaml_fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        where = f"{key}." if key else ""
        raise OTReweightError(
            f"unknown config key {where + str(unknown[0])!r}; known keys here: {', '.join(known)}"
        )
    hints = typing.get_type_hints(cls)
    kw = {name: coerce(v, hints[name], f"{key}.{name}" if key else name) for name, v in data.items()}
    return cls(**kw)


class Section:
    """A config dataclass's plain YAML form; its fields are read as attributes (``cfg.stage1.lr``).

    Mapping-style access (``cfg["stage1"]["lr"]``, ``section.get(key)``, item assignment) still
    works for code written against the earlier dict config, with a :class:`DeprecationWarning`;
    it will be removed in 0.5.
    """

    def __getitem__(self, key: str):
        _mapping_access(self, f"[{key!r}]", f".{key}")
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        _mapping_access(self, f"[{key!r}] = ...", f".{key} = ...")
        if key not in self:
            raise KeyError(key)
        setattr(self, key, value)

    def __contains__(self, key) -> bool:
        return key in {f.name for f in yaml_fields(type(self))}

    def get(self, key: str, default=None):
        _mapping_access(self, f".get({key!r})", f".{key}")
        return getattr(self, key) if key in self else default

    def keys(self) -> list[str]:
        return [f.name for f in yaml_fields(type(self))]

    def to_dict(self) -> dict:
        """The section as plain YAML-ready values (tuples become lists; nested sections dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in yaml_fields(type(self))}

    def copy(self):
        return copy.deepcopy(self)

    def __eq__(self, other) -> bool:
        """Equal to the same section with equal fields, or to its plain mapping (a loaded YAML)."""
        if isinstance(other, dict):
            return self.to_dict() == _plain(other)
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    __hash__ = None


def _mapping_access(section, used: str, instead: str) -> None:
    warnings.warn(f"{type(section).__name__}{used}: reading a config section like a mapping is deprecated and will be "
                  f"removed in 0.5; use the attribute ({type(section).__name__}{instead}), or .to_dict() for a plain dict",
                  DeprecationWarning, stacklevel=3)


def _plain(v):
    if isinstance(v, Section):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _check_fields(obj, prefix: str = "") -> None:
    """Type-check every field of a dataclass instance in place (for objects built in Python)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        object.__setattr__(obj, f.name, coerce(getattr(obj, f.name), hints[f.name], prefix + f.name))


def check_progress(value) -> None:
    """``progress`` is true, false or ``"auto"`` (a bar when stderr is a terminal)."""
    if value not in (True, False, "auto"):
        raise OTReweightError(f"progress must be true, false or auto, got {value!r}")


def check_loggers(value) -> tuple[str, ...]:
    """``log``: a logger name or a list of them, as a tuple; a missing package is refused in one line."""
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        check_choice("logger (config key log)", name, LOGGERS)
        if name == "tensorboard":
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise OTReweightError("log: tensorboard needs the tensorboard package; "
                                      "pip install 'otreweight[tensorboard]' or remove log")
    return names


