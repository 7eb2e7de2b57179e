"""Typed callers: a ``typing.Protocol`` of a service's functions, bound to ``client.call``, so that mypy checks
each call's arguments and result type, while the calls go out exactly as ``client.call``'s."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .client import Caller

T = TypeVar("T")


class _Bound:
    """Looks the protocol's function names up on a caller; other names are an AttributeError."""

    __slots__ = ("_caller", "_names")

    def __init__(self, caller: Caller, names: frozenset[str]) -> None:
        self._caller = caller
        self._names = names

    def __getattr__(self, name: str) -> Any:
        if name not in self._names:
            raise AttributeError(f"{name!r} is not a function of this service's protocol")
        return getattr(self._caller, name)

    def __repr__(self) -> str:
        return f"<typed caller of {', '.join(sorted(self._names))}>"


def typed(caller: Caller, protocol: Callable[..., T]) -> T:
    """``caller`` (``client.call``, ``client.call(timeout=5)``, a fanout client's ``call``...) seen as
    ``protocol``, whose methods name the service's functions: ``typed(client.call, MathService).add(1, 2)``.

    ``protocol`` is a class (typed as a callable: mypy refuses a Protocol where ``type[T]`` is expected)."""
    names = frozenset(name for name, _ in inspect.getmembers(protocol, inspect.isfunction) if not name.startswith("_"))
    if not names:
        raise TypeError(f"{getattr(protocol, '__name__', protocol)} declares no functions to call")
    return cast(T, _Bound(caller, names))
