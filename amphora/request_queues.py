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
from .link import Link
from .topology import ServiceTopology


class KnownQueues:
    """Request queues this process created, and until when they surely exist unless removed: for good
    without ``expires``, else for half of it (the broker deletes an unused queue ``expires`` after its last
    declaration; the half leaves time for a consumer to reach it)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._pruned_at = 0

    def created(self, name: str, since: float, expires: float | None) -> None:
        """``name`` was declared, with ``expires`` seconds, by a declaration sent at ``since``."""
        self._until[name] = float("inf") if expires is None else since + expires / 2
        if len(self._until) > 2 * self._pruned_at + 1000:  # forget expired ones, in amortized linear time
            now = monotonic()
            self._until = {queue: until for queue, until in self._until.items() if until > now}
            self._pruned_at = len(self._until)

    def forget(self, name: str) -> None:
        self._until.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return self._until.get(name, 0.0) > monotonic()


class RequestQueues:
    """Mixed into clients and servers, which provide the publishing link and the topology."""

    _publisher: Link
    topology: ServiceTopology
    _known_queues: KnownQueues

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
            self._known_queues.created(name, since, expires)

        return self._run_on_broker(create, nowait)

    def remove_request_queue(
        self, queue: str, nowait: bool = False, if_unused: bool = False, if_empty: bool = False
    ) -> gevent.Greenlet | None:
        """Delete the queue made by :meth:`create_new_request_queue`, with the requests still in it (their
        calls end with NoResult at their timeout). Removing a missing queue is harmless. ``if_unused`` and
        ``if_empty`` make the broker refuse (PreconditionFailed) while a server consumes it or requests
        wait in it."""
        name = self.topology.request_queue(queue)
        self._known_queues.forget(name)
        return self._run_on_broker(lambda channel: channel.queue_delete(name, if_unused, if_empty), nowait)

    def _run_on_broker(self, operation: Callable[[Channel], Any], nowait: bool) -> gevent.Greenlet | None:
        if nowait:
            return gevent.spawn(self._publisher.execute, operation)
        self._publisher.execute(operation)
        return None
