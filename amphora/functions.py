"""The functions a server offers: registration (``add_function``), the request context, time limits."""

from __future__ import annotations

import asyncio
import difflib
import inspect
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent

from . import coroutines
from .amqp.properties import encode_table
from .protocol import RESERVED_HEADER_PREFIXES


@dataclass
class RequestContext:
    """The first argument of a handler registered with ``context=True``.

    ``headers`` are the request's AMQP headers (the caller's ``headers=`` among them); what the handler
    puts in ``reply_headers`` travels back as headers of the reply. ``server`` is the serving
    :class:`~amphora.AmqpRpcServer`, whose ``settings`` hold what was given to it once at start.
    """

    request_id: str
    function: str
    headers: dict[str, Any]
    server: Any
    reply_headers: dict[str, Any] = field(default_factory=dict)


def checked_reply_headers(context: RequestContext) -> dict[str, Any]:
    """The handler's reply headers, without names amphora keeps for itself; ValueError if AMQP cannot
    carry them."""
    headers = {
        name: value for name, value in context.reply_headers.items() if not name.startswith(RESERVED_HEADER_PREFIXES)
    }
    try:
        encode_table(headers)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise ValueError(f"the handler's reply headers cannot be sent: {exc}") from None
    return headers


@dataclass(frozen=True)
class Function:
    """A registered handler and how to run it."""

    func: Callable[..., Any]
    time_limit: float | None = None
    context: bool = False
    coroutine: bool = False  # an ``async def`` function, run on an event loop (amphora.coroutines)


class TimeLimitExceeded(Exception):
    """A handler ran past its time limit (and was interrupted, unless it runs in a thread)."""


class FunctionRegistry:
    """The handlers of one server, by remote name."""

    def __init__(self) -> None:
        self._functions: dict[str, Function] = {}

    def add(
        self, func: Any = None, name: str | None = None, *, time_limit: float | None = None, context: bool = False
    ) -> Any:
        """Register ``func`` under ``name`` (its own name by default); usable as a call or as a decorator,
        bare or with a name: ``add(f)``, ``add(f, "x")``, ``@add``, ``@add("x")``, ``@add(name="x")``."""
        if func is None or isinstance(func, str):
            label = func if isinstance(func, str) else name
            return lambda f: self.add(f, label, time_limit=time_limit, context=context)
        if not callable(func):
            raise TypeError(f"add_function needs a callable, got {func!r}")
        coroutine = inspect.iscoroutinefunction(func)
        self._functions[name or func.__name__] = Function(func, time_limit, context, coroutine)
        return func

    def get(self, name: str) -> Function | None:
        return self._functions.get(name)

    def did_you_mean(self, name: str) -> str:
        """``"; did you mean 'add'?"`` for a name close to a registered one, else an empty string."""
        close = difflib.get_close_matches(name, self._functions, n=1)
        return f"; did you mean {close[0]!r}?" if close else ""


def invoke(
    function: Function,
    args: list[Any],
    kwargs: dict[str, Any],
    context: RequestContext | None,
    threads: bool,
    time_limit: float | None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Any:
    """Run a handler (in gevent's thread pool with ``threads``; a coroutine function on ``loop``, else on
    amphora's own) within its time limit, else the given one.

    Raises TimeLimitExceeded when the limit passes first. A greenlet handler is interrupted there, a
    coroutine's task is cancelled; a thread cannot be: it runs on, and its result is dropped.
    """
    if context is not None:
        args = [context, *args]
    limit = function.time_limit if function.time_limit is not None else time_limit
    if limit is None:
        return _call(function, args, kwargs, threads, loop)
    timer = gevent.Timeout(limit)
    timer.start()
    try:
        return _call(function, args, kwargs, threads, loop)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise TimeLimitExceeded(f"the handler ran over its time limit of {limit} s") from None
    finally:
        timer.close()


def _call(
    function: Function,
    args: list[Any],
    kwargs: dict[str, Any],
    threads: bool,
    loop: asyncio.AbstractEventLoop | None,
) -> Any:
    if function.coroutine:
        return coroutines.run(function.func, args, kwargs, loop)
    if threads:
        return gevent.get_hub().threadpool.apply(function.func, args, kwargs)
    return function.func(*args, **kwargs)
