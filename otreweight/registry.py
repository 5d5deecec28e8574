"""A tiny name -> factory registry, used for models and methods."""
from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

from ._errors import OTReweightError, check_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``create(name, **kwargs)`` builds one, with a clear error for an unknown name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        check_choice(self.kind, name, self._factories)
        return self._factories[name]

    def create(self, name: str, **kwargs) -> T:
        factory = self.get(name)
        check_options(f"{self.kind} {name!r}", factory, kwargs)
        return factory(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories


def check_options(what: str, func: Callable, options: dict, exclude=("self",)) -> None:
    """Raise a one-line error if ``func`` does not accept every keyword in ``options``."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in exclude]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise OTReweightError(
            f"{what} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(accepted) or 'none'}"
        )
