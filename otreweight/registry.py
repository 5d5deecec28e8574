"""A tiny name -> factory registry, used for models, methods and data sources."""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Generic, TypeVar

from ._errors import OTReweightError, check_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``create(name, **kwargs)`` builds one, with a clear error for an unknown name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._prefixes: dict[str, tuple[Callable[..., T], str]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a plug-in a test registered); an unknown name is an error."""
        check_choice(self.kind, name, self._factories)
        del self._factories[name]

    def register_prefix(self, prefix: str, factory: Callable[..., T], argument: str) -> None:
        """A family of names: ``get(prefix + rest)`` is ``factory`` with ``argument=rest`` (e.g.
        ``hf/bert-base-uncased`` -> ``hf_model(name_or_path="bert-base-uncased", ...)``)."""
        if prefix in self._prefixes:
            raise ValueError(f"{self.kind} prefix {prefix!r} is already registered")
        self._prefixes[prefix] = (factory, argument)

    def family(self, name: str):
        """``(factory, argument, rest)`` when ``name`` belongs to a registered prefix, else ``None``."""
        for prefix, (factory, argument) in self._prefixes.items():
            if isinstance(name, str) and name.startswith(prefix) and len(name) > len(prefix):
                return factory, argument, name[len(prefix):]
        return None

    def get(self, name: str) -> Callable[..., T]:
        fam = self.family(name)
        if fam is not None:
            factory, argument, rest = fam
            bound = functools.partial(factory, **{argument: rest})
            bound.__dict__.update({k: v for k, v in vars(factory).items() if k != "__wrapped__"})
            bound.__doc__, bound.__name__ = factory.__doc__, f"{factory.__name__}[{rest}]"
            return bound
        if name not in self._factories and self._prefixes:
            check_choice(self.kind, name, [*self._factories, *(p + "<name>" for p in self._prefixes)])
        check_choice(self.kind, name, self._factories)
        return self._factories[name]

    def prefixes(self) -> list[str]:
        return sorted(self._prefixes)

    def create(self, name: str, **kwargs) -> T:
        factory = self.get(name)
        check_options(f"{self.kind} {name!r}", factory, kwargs)
        params = inspect.signature(factory).parameters
        missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n != "self"
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
        if missing:
            raise OTReweightError(f"{self.kind} {name!r} needs {', '.join(missing)} "
                                  f"(e.g. create_model({name!r}, {missing[0]}=...))" if self.kind == "model" else
                                  f"{self.kind} {name!r} needs {', '.join(missing)}")
        return factory(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories or self.family(name) is not None

    # Read-only mapping views (``registry[name]``, ``dict(registry)``); ``get`` keeps its clear error.
    def __getitem__(self, name: str) -> Callable[..., T]:
        return self._factories[name]

    def __iter__(self):
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def keys(self):
        return self._factories.keys()

    def items(self):
        return self._factories.items()


def check_options(what: str, func: Callable, options: dict, exclude=("self",)) -> None:
    """Raise a one-line error if ``func`` does not accept every keyword in ``options``."""
    params = inspect.signature(func).parameters
    check_option_types(what, func, options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in exclude]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise OTReweightError(
            f"{what} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(accepted) or 'none'}"
        )


def check_option_types(what: str, func: Callable, options: dict) -> None:
    """Raise a one-line error if an option of ``func`` whose default is a number (or a bool) is given
    something else, e.g. ``meta_ce="ten"`` (names ``func`` does not take are left to :func:`check_options`)."""
    params = inspect.signature(func).parameters
    for name, value in options.items():
        p = params.get(name)
        if p is None or p.default is inspect.Parameter.empty or p.default is None:
            continue
        if isinstance(p.default, bool):
            if not isinstance(value, bool):
                raise OTReweightError(f"{what}: option {name} must be true or false, got {value!r}")
        elif isinstance(p.default, (int, float)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) or _numeric_text(value)):
                raise OTReweightError(f"{what}: option {name} must be a number, got {value!r}")


def _numeric_text(value) -> bool:
    """A string a number reads from (``"inf"``, ``"1e-3"``): accepted where a number is expected."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
