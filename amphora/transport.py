"""Transport: what a client or a server stands on to reach the broker.

A consuming link (prefetch as given), a publishing link with publisher confirms, both on connections shared
with the rest of the process, on channels shared too (:mod:`amphora.connections`), the outbox
that publishes through the second, and the per-key request queues known to exist. Clients and servers each
build one and differ only in what they declare, consume and publish on it; :class:`OnTransport` holds what
they share above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import monotonic

from .amqp import ConnectionParameters
from .link import Link, start_links
from .metrics import Metrics, watch_links
from .outbox import Outbox
from .protocol import Serializer
from .topology import Declaration, ServiceTopology


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


class Transport:
    """The two links, the outbox and the known queues of one client or server."""

    def __init__(
        self,
        parameters: Sequence[ConnectionParameters],
        name: str,
        *,
        prefetch: int,
        outbox_limit: int = 100_000,
        outbox_block: bool = True,
        outbox_patience: int | None = None,
    ) -> None:
        self.consumer = Link(parameters, f"{name} consumer", prefetch=prefetch)
        self.publisher = Link(parameters, f"{name} publisher", confirm=True)
        self.outbox = Outbox(self.publisher, limit=outbox_limit, block=outbox_block, patience=outbox_patience)
        self.known_queues = KnownQueues()

    def declare(self, declarations: Sequence[Declaration]) -> None:
        """Declare on both links, now if connected and after every reconnect."""
        self.consumer.declare(declarations)
        self.publisher.declare(declarations)

    def watch(self, metrics: Metrics) -> None:
        """Report both links' connections and the outbox's depth to ``metrics``."""
        watch_links(metrics, (self.consumer, self.publisher), self.publisher, self.outbox)

    def start(self, purpose: str) -> None:
        """Connect both links (see :func:`~amphora.link.start_links`)."""
        start_links((self.consumer, self.publisher), purpose)

    def stop(self) -> None:
        """Disconnect both links, publishing side first; the outbox keeps what is unconfirmed."""
        self.publisher.stop()
        self.outbox.stop_waiting()
        self.consumer.stop()

    def unreachable(self) -> str | None:
        """Why either link has no broker connection, while it cannot get one (None if both have one)."""
        return self.consumer.unreachable() or self.publisher.unreachable()


class OnTransport:
    """Clients and servers: the transport, their service's topology and serializer, and stopping either side
    of the transport on its own (to test what a lost link does)."""

    transport: Transport
    topology: ServiceTopology
    serializer: Serializer

    def stop_publisher(self) -> None:
        """Disconnect the publishing side; what the outbox holds waits there until ``serve()``."""
        self.transport.publisher.stop()

    def stop_consumer(self) -> None:
        """Disconnect the consuming side; unacknowledged deliveries go back to their queues."""
        self.transport.consumer.stop()
