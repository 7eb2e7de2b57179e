"""Servers hosted by an asyncio application: ``await server.serve()``, ``async def`` handlers on its loop.

:class:`AmqpRpcServer` takes the arguments of :class:`amphora.AmqpRpcServer` and, when it serves, makes one
of those in the process's :class:`~amphora.hub_thread.HubThread` (gevent objects belong to the hub they are
made in): reply after confirm, the memory of answered requests and reconnects are that server's, not a
second implementation. Its ``async def`` handlers run on the loop that awaits :meth:`AmqpRpcServer.serve`
(see :mod:`amphora.coroutines`); its plain handlers run in the hub thread, where they must not block for
long (give blocking ones ``threads=True``)::

    server = AmqpRpcServer("math")

    @server.add_function
    async def add(x, y):
        return x + y

    task = asyncio.create_task(server.serve())
    ...
    task.cancel()  # or await server.stop(): a graceful stop either way
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from . import fanout
from . import server as gevent_server
from .functions import FunctionRegistry
from .hub_thread import AsyncioInbox, HubThread

__all__ = ["AmqpRpcFanoutServer", "AmqpRpcServer"]


class AmqpRpcServer:
    """Serves the functions of ``service_name`` from asyncio; the arguments of :class:`amphora.AmqpRpcServer`.

    Register functions (``async def`` or plain) with :meth:`add_function`, then ``await server.serve()``.
    The arguments are checked when it first serves.
    """

    _gevent_class: type[gevent_server.AmqpRpcServer] = gevent_server.AmqpRpcServer

    def __init__(self, service_name: str, *args: Any, **options: Any) -> None:
        self.service_name = service_name
        self._args = args
        self._options = options
        self._functions = FunctionRegistry()
        self._hub = HubThread.shared()
        self.server: gevent_server.AmqpRpcServer | None = None  # made in the hub thread by the first serve()

    def add_function(
        self, func: Any = None, name: str | None = None, *, time_limit: float | None = None, context: bool = False
    ) -> Any:
        """Register a function, ``async def`` or plain, as :meth:`amphora.AmqpRpcServer.add_function` does
        (as a call or a decorator)."""
        return self._functions.add(func, name, time_limit=time_limit, context=context)

    @property
    def serving(self) -> bool:
        """True while the server takes requests (see :attr:`amphora.AmqpRpcServer.serving`)."""
        return self.server is not None and self.server.serving

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until stopped (:meth:`stop`, or a cancellation of the awaiting task).

        ``on_ready()`` runs in the loop once the server consumes. Raises at once what reconnecting cannot
        fix, as :meth:`amphora.AmqpRpcServer.serve` does. On cancellation the server stops as
        :meth:`stop` does, even if the task is cancelled again meanwhile; then CancelledError is raised.
        """
        loop = asyncio.get_running_loop()
        AsyncioInbox.of(loop)  # made here, in the loop's thread, for the coroutines posted to it from the hub
        server = await self._in_hub(self._made)
        server.coroutine_loop = loop
        try:
            await self._in_hub(server.serve)
            if on_ready is not None:
                on_ready()
            await self._in_hub(server.join)
        except asyncio.CancelledError:
            stopping = self._in_hub(server.stop)
            while not stopping.done():  # the handlers it waits for need this loop: keep it running till then
                try:
                    await asyncio.shield(stopping)
                except asyncio.CancelledError:
                    continue
            raise
        finally:
            server.coroutine_loop = None

    async def stop(self) -> None:
        """Stop gracefully, as :meth:`amphora.AmqpRpcServer.stop`: no new requests, the running handlers
        finish and their replies are confirmed (within ``stop_timeout``), then disconnect."""
        if self.server is not None:
            await self._in_hub(self.server.stop)

    def _made(self) -> gevent_server.AmqpRpcServer:
        """In the hub thread: the gevent server, made at the first call, with the functions registered here."""
        if self.server is None:
            self.server = self._gevent_class(self.service_name, *self._args, **self._options)
            self.server._functions = self._functions
        return self.server

    def _in_hub(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """``fn()`` run in a greenlet of the hub thread, as a future of the running loop."""
        return asyncio.wrap_future(self._hub.submit(fn))


class AmqpRpcFanoutServer(AmqpRpcServer):
    """Gets every request of the service (see :class:`amphora.AmqpRpcFanoutServer`), from asyncio."""

    _gevent_class = fanout.AmqpRpcFanoutServer
