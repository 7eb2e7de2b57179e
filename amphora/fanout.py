"""Broadcast RPC: every running fanout server of a service executes every request.

Each :class:`AmqpRpcFanoutServer` consumes a queue of its own, bound to the service's fanout exchange, so
every server gets a copy of each request. A server started without a ``name`` gets a fresh queue that
disappears ``queue_expires`` seconds after the server is gone: it survives a short outage of the server's
connection, but a server that was not running when a request was broadcast never sees it. A server
started with a stable ``name`` keeps one durable queue that holds broadcasts while it is away.

:class:`AmqpRpcFanoutClient` returns the first reply from ``call``/``defer`` and, with ``gather``, every
server's reply, keyed by the server's name.
"""

from __future__ import annotations

from typing import Any

from gevent.event import AsyncResult

from .amqp import Message
from .client import AmqpRpcClient, Caller
from .link import settle_quietly
from .pending import PendingGather
from .protocol import Serializer
from .server import AmqpRpcServer
from .topology import Declaration


class AmqpRpcFanoutServer(AmqpRpcServer):
    """A server that gets every request of its service; a handler raising IgnoreRequest sends no reply.

    Takes the options of :class:`~amphora.AmqpRpcServer`, and ``queue_expires`` (seconds, default 60): how
    long the queue of a server without a stable ``name`` outlives the server.
    """

    fanout = True

    def __init__(
        self,
        service_name: str,
        serializer: Serializer | type | None = None,
        *,
        name: str | None = None,
        queue_expires: float = 60.0,
        **options: Any,
    ) -> None:
        self._queue_expires_ms = None if name is not None else int(queue_expires * 1000)
        super().__init__(service_name, serializer, name=name, **options)

    def _request_queue_declarations(self) -> list[Declaration]:
        return self.topology.fanout_server_queue(self.name, self._queue_expires_ms)

    @property
    def _request_queue(self) -> str:
        return self.topology.fanout_queue(self.name)

    def _on_ignored(self, message: Message) -> None:
        """Every server got its own copy: ignoring one means acknowledging it and not replying."""
        settle_quietly(message.ack)


class AmqpRpcFanoutClient(AmqpRpcClient):
    """Broadcasts calls to every fanout server of the service; takes the options of AmqpRpcClient.

    ``call``/``defer`` give the first reply. ``gather(timeout=None, expect=None)`` waits for every
    server's reply until ``timeout`` (the client's by default) or until ``expect`` replies came, and
    returns ``{server name: result or exception}``. A broadcast while no server runs fails at once with
    :class:`~amphora.Unroutable`.
    """

    fanout = True

    def __init__(self, service_name: str, *args: Any, **options: Any) -> None:
        super().__init__(service_name, *args, **options)
        self.gather = Caller(self._any_thread("gather", self._gather), frozenset({"timeout", "expect"}))

    def _gather(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> dict[str, Any]:
        return self._defer_gather(func_name, args, kwargs, **options).get()

    def _defer_gather(
        self,
        func_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        expect: int | None = None,
    ) -> AsyncResult:
        """Broadcast a request; the AsyncResult gets ``{server name: result or exception}``."""
        timeout = self.timeout if timeout is None else timeout
        if not timeout:
            raise ValueError("gather needs a timeout: it waits for replies until then")
        return self._request(
            func_name, args, kwargs, timeout=timeout, make_pending=lambda f, t: PendingGather(f, t, expect)
        )
