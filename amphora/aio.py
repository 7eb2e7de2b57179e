"""amphora for asyncio: ``await client.call.fn(...)``, with every guarantee of the gevent client.

:class:`AmqpRpcClient` takes the arguments of :class:`amphora.AmqpRpcClient` and makes one of those, in the
process's :class:`~amphora.hub_thread.HubThread`: the outbox, pending calls, deadlines and reconnects are
that client's, not a second implementation. A call is posted to the hub thread (batched: one wake-up for
all posted before it runs), starts there as a ``defer`` would, and its outcome is posted back to the
calling loop (batched too, one ``call_soon_threadsafe`` per batch), where it completes an asyncio future.
Any asyncio loop works (uvloop too), from any thread, several at once.

Cancelling a task that awaits a call cancels only the waiting: the request was already handed to the
outbox, it is published and may run on a server; its reply is dropped when it comes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import gevent

from . import client as gevent_client
from . import fanout as gevent_fanout
from .aio_server import AmqpRpcFanoutServer, AmqpRpcServer
from .client import CALL_OPTIONS, Caller, Tuner
from .hub_thread import AsyncioInbox, HubThread
from .threaded import Settle, relay

__all__ = ["AmqpRpcClient", "AmqpRpcFanoutClient", "AmqpRpcFanoutServer", "AmqpRpcServer", "parallel"]
# the servers for asyncio applications live in amphora.aio_server: here, everything asyncio is in one place


class AmqpRpcClient:
    """Calls the functions of ``service_name`` from asyncio; the arguments of :class:`amphora.AmqpRpcClient`.

    ``await client.call.fn(...)`` gives the result; ``client.defer.fn(...)`` starts the call and returns an
    asyncio future of it; ``client.cast.fn(...)`` returns a future set once the broker has the request.
    The client is made in the background: an error that reconnecting cannot fix (a wrong password) fails
    the first call, or ``async with``. Stop it with ``await client.close()`` (or ``async with``).
    """

    _gevent_class: type[gevent_client.AmqpRpcClient] = gevent_client.AmqpRpcClient

    def __init__(self, service_name: str, *args: Any, **options: Any) -> None:
        self.service_name = service_name
        self._hub = HubThread.shared()
        self._tuners: dict[str, Tuner] = {}
        self._client: gevent_client.AmqpRpcClient | None = None
        self._error: BaseException | None = None
        self._until_made: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = []
        """What waits, in the hub thread, for the gevent client to be made (None once it is, or failed)."""
        self._hub.spawn(self._make, args, options)  # connecting may take a while: not in the hub's inbox
        self.call = Caller(self._call, CALL_OPTIONS)
        self.defer = Caller(self._defer, CALL_OPTIONS | {"wait_publish"})
        self.cast = Caller(self._cast, CALL_OPTIONS)

    tune_function = gevent_client.AmqpRpcClient.tune_function
    """Set how the routing key of calls to a function is chosen from their arguments (as in the gevent
    client; the tuner runs in the hub thread)."""

    def _make(self, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        """In the hub thread: make the gevent client, then start what waited for it, in order."""
        try:
            self._client = self._gevent_class(self.service_name, *args, **options)
        except BaseException as exc:
            self._error = exc
        else:
            self._client._tuners = self._tuners
        waiting, self._until_made = self._until_made or [], None
        for fn, fn_args in waiting:
            fn(*fn_args)

    def _once_made(self, fn: Callable[..., Any], *args: Any) -> None:
        """In the hub thread: ``fn(*args)`` now if the gevent client is made (or failed), else once it is."""
        if self._until_made is None:
            fn(*args)
        else:
            self._until_made.append((fn, args))

    @property
    def uuid(self) -> str | None:
        """The uuid (reply queue) of the underlying client, once it is made."""
        return None if self._client is None else self._client.uuid

    # --- calls ---------------------------------------------------------------------------------

    async def _call(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any:
        return await self._start("call", func_name, args, kwargs, options)

    def _defer(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any:
        return self._start("defer", func_name, args, kwargs, options)

    def _cast(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any:
        return self._start("cast", func_name, args, kwargs, options)

    def _start(
        self, kind: str, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Post a call to the hub thread; the future (of the running loop) gets its outcome."""
        future, settle = _future_and_settle()
        self._hub.post(self._once_made, self._relay, kind, func_name, args, kwargs, options, settle)
        return future

    def _relay(
        self, kind: str, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any],
        settle: Settle,
    ) -> None:  # fmt: skip
        if self._client is None:
            settle(None, self._error or RuntimeError("the client is closed"))
        else:
            relay(self._client, kind, func_name, args, kwargs, options, settle)

    # --- lifecycle -----------------------------------------------------------------------------

    async def _wait_made(self) -> None:
        """Wait until the underlying client is made; raise what made it fail."""
        future, settle = _future_and_settle()
        self._hub.post(self._once_made, lambda: settle(None, self._error))
        await future

    async def close(self) -> None:
        """Disconnect (as the gevent client's ``stop``): requests still unconfirmed are dropped, calls still
        waiting fail when their time is up."""
        future, settle = _future_and_settle()
        self._hub.post(self._once_made, gevent.spawn, self._stop, settle)
        await future

    def _stop(self, settle: Settle) -> None:
        made, self._client = self._client, None
        try:
            if made is not None:
                made.stop()
        except Exception as exc:
            settle(None, exc)
        else:
            settle(None, None)

    async def __aenter__(self) -> Self:
        await self._wait_made()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


def _future_and_settle() -> tuple[asyncio.Future[Any], Settle]:
    """A future of the running loop, and the thread-safe ``settle(value, error)`` that completes it."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    return future, functools.partial(AsyncioInbox.of(loop).settle, future)


class AmqpRpcFanoutClient(AmqpRpcClient):
    """Broadcasts to every fanout server of the service (see :class:`amphora.AmqpRpcFanoutClient`);
    ``await client.gather.fn(..., timeout=None, expect=None)`` gives ``{server name: result or exception}``."""

    _gevent_class = gevent_fanout.AmqpRpcFanoutClient

    def __init__(self, service_name: str, *args: Any, **options: Any) -> None:
        super().__init__(service_name, *args, **options)
        self.gather = Caller(self._gather, frozenset({"timeout", "expect"}))

    async def _gather(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any:
        return await self._start("gather", func_name, args, kwargs, options)


async def parallel(*calls: Awaitable[Any], timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
    """The results of ``calls`` (futures from ``client.defer``, or coroutines from ``client.call``), in
    the order given, once all ended, as :func:`amphora.parallel` gives them.

    Without ``return_exceptions`` the first failure in order is raised, after every call has ended.
    ``timeout`` bounds the whole wait (TimeoutError; the calls still waiting are cancelled).
    """
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout)
    if not return_exceptions:
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    return outcomes
