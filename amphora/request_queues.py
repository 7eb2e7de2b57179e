"""Per-key request queues made and removed on the fly, by clients and servers alike.

``create_new_request_queue("alice")`` makes ``rpc_{service}_queue_alice``, bound to the request exchange with
routing key ``alice``: calls routed so (``routing_key=`` or a ``tune_function``) wait there until a server
takes them with ``receive_from_queue("alice")``.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent

from .amqp import Channel
from .transport import OnTransport


class RequestQueues(OnTransport):
    """Mixed into clients and servers: operations on their transport's publishing link."""

    def create_new_request_queue(
        self,
        queue: str,
        routing_key: str | None = None,
        nowait: bool = False,
        expires: float | None = None,
        durable: bool = True,
    ) -> gevent.Greenlet | None:
        """Create the request queue ``rpc_{service}_queue_{queue}``, bound to the request exchange with
        ``routing_key`` (``queue`` itself by default), for servers' ``receive_from_queue(queue)``.

        With ``expires`` (seconds) the broker deletes the queue once it was that long without a consumer
        (or a new declaration), so calls for a key nobody serves any more fail at once as Unroutable. With
        ``durable=False`` the queue, and what waits in it, does not outlive a broker restart (classic queues
        only; see docs/longpolling.rst for why per-user queues may want that). Waits until the broker
        created it (and for a connection, if there is none yet), unless ``nowait``: then it is done in a
        greenlet, which is returned. Creating an existing queue again is harmless (with the same ``expires``
        and ``durable``: the broker refuses to change a queue's arguments).
        """
        expires_ms = None if expires is None else int(expires * 1000)
        declarations = self.topology.keyed_request_queue(queue, routing_key, expires_ms, durable)
        name = self.topology.request_queue(queue)

        def create(channel: Channel) -> None:
            since = monotonic()
            for declaration in declarations:
                declaration.declare(channel)
            self.transport.known_queues.created(name, since, expires)

        return self._run_on_broker(create, nowait)

    def remove_request_queue(
        self, queue: str, nowait: bool = False, if_unused: bool = False, if_empty: bool = False
    ) -> gevent.Greenlet | None:
        """Delete the queue made by :meth:`create_new_request_queue`, with the requests still in it (their
        calls end with NoResult at their timeout). Removing a missing queue is harmless. ``if_unused`` and
        ``if_empty`` make the broker refuse (PreconditionFailed) while a server consumes it or requests
        wait in it."""
        name = self.topology.request_queue(queue)
        self.transport.known_queues.forget(name)
        return self._run_on_broker(lambda channel: channel.queue_delete(name, if_unused, if_empty), nowait)

    def _run_on_broker(self, operation: Callable[[Channel], Any], nowait: bool) -> gevent.Greenlet | None:
        if nowait:
            return gevent.spawn(self.transport.publisher.execute, operation)
        self.transport.publisher.execute(operation)
        return None
