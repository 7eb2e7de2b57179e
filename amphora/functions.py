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
from .validation import Validator, build_validator

RESERVED_PREFIX = "amphora."
"""Function names amphora keeps for itself (``amphora.describe``)."""


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
    validator: Validator | None = None
    """Converts the arguments by the handler's type hints (and checks its result); None: taken as they come."""
    coroutine: bool = False  # an ``async def`` function, run on an event loop (amphora.coroutines)


class TimeLimitExceeded(Exception):
    """A handler ran past its time limit (and was interrupted, unless it runs in a thread)."""


class FunctionRegistry:
    """The handlers of one server, by remote name."""

    def __init__(self, validate: bool = True) -> None:
        self._functions: dict[str, Function] = {}
        self.validate = validate
        """Whether functions check their arguments by their type hints unless registered otherwise."""

    def add(
        self,
        func: Any = None,
        name: str | None = None,
        *,
        time_limit: float | None = None,
        context: bool = False,
        validate: bool | None = None,
        check_result: bool = False,
    ) -> Any:
        """Register ``func`` under ``name`` (its own name by default); usable as a call or as a decorator,
        bare or with a name: ``add(f)``, ``add(f, "x")``, ``@add``, ``@add("x")``, ``@add(name="x")``.

        ``validate`` (the registry's default if None) converts the arguments by the type hints;
        ``check_result`` also checks the result against the return annotation."""
        if func is None or isinstance(func, str):
            label = func if isinstance(func, str) else name
            return lambda f: self.add(
                f, label, time_limit=time_limit, context=context, validate=validate, check_result=check_result
            )
        if not callable(func):
            raise TypeError(f"add_function needs a callable, got {func!r}")
        name = name or func.__name__
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(f"function names starting with {RESERVED_PREFIX!r} are amphora's own: {name!r}")
        self._add(name, func, time_limit, context, self.validate if validate is None else validate, check_result)
        return func

    def add_reserved(self, name: str, func: Callable[..., Any]) -> None:
        """Register one of amphora's own functions (a name starting with ``amphora.``)."""
        self._add(name, func, None, False, False, False)

    def _add(
        self,
        name: str,
        func: Callable[..., Any],
        time_limit: float | None,
        context: bool,
        validate: bool,
        check_result: bool,
    ) -> None:
        validator = build_validator(name, func, context, validate, check_result) if validate or check_result else None
        self._functions[name] = Function(func, time_limit, context, validator, inspect.iscoroutinefunction(func))

    def public(self) -> dict[str, Function]:
        """The functions callers registered, by name (not amphora's own)."""
        return {name: f for name, f in self._functions.items() if not name.startswith(RESERVED_PREFIX)}

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

    Raises TimeLimitExceeded when the limit passes first, and TypeError for a result that does not fit the
    return annotation (if checked). A greenlet handler is interrupted there, a coroutine's task is cancelled;
    a thread cannot be: it runs on, and its result is dropped.
    """
    if context is not None:
        args = [context, *args]
    limit = function.time_limit if function.time_limit is not None else time_limit
    if limit is None:
        return _checked(function, _call(function, args, kwargs, threads, loop))
    timer = gevent.Timeout(limit)
    timer.start()
    try:
        return _checked(function, _call(function, args, kwargs, threads, loop))
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise TimeLimitExceeded(f"the handler ran over its time limit of {limit} s") from None
    finally:
        timer.close()


def _checked(function: Function, result: Any) -> Any:
    if function.validator is not None:
        function.validator.check_result(result)
    return result


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
