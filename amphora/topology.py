"""Names and declarations of a service's exchanges and queues (compatible with the original amphora).

- ``rpc_{service}_request``: the request exchange (direct; fanout for a fanout service) and the default
  request queue, bound with the empty routing key.
- ``rpc_{service}_fanout_{server}``: a fanout server's own request queue.
- ``rpc_{service}_events``: the topic exchange of published events; ``rpc_{service}_events_{id}`` the queue
  of one subscription.
- ``rpc_{service}_queue_{label}``: per-key request queues, bound with routing key ``label`` unless given.
- ``rpc_{service}_response``: the reply exchange (direct); a client's replies are routed with its ``uuid``
  to the reply queue it shares with the other clients of its process, ``rpc_replies_{id}``, or for a client
  given a fixed uuid to its own, ``rpc_{service}_{uuid}_response`` (:mod:`amphora.replies`).
- ``rpc_{service}_dead``: the dead-letter exchange (headers). Requests that expire in a queue are
  dead-lettered there by the broker and reach their caller's reply queue through a binding on the
  ``amphora-client`` header; requests a server refuses go to the queue of the same name.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .amqp import Channel
from .amqp.errors import PreconditionFailed
from .protocol import HEADER_DEAD, REFUSED

log = logging.getLogger(__name__)

DEFAULT_ROUTING_KEY = ""
DEAD_LETTER_LIMIT = 10_000
"""How many refused requests a service's dead-letter queue keeps by default (the oldest go first)."""


@dataclass(frozen=True)
class Exchange:
    name: str
    kind: str = "direct"
    durable: bool = True

    def declare(self, channel: Channel) -> None:
        channel.exchange_declare(self.name, self.kind, durable=self.durable)


@dataclass(frozen=True)
class Queue:
    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    keep_existing: bool = False
    """If the queue exists with other arguments, keep it as it is (logged) instead of failing."""

    def declare(self, channel: Channel) -> None:
        if not self.keep_existing:
            self._declare(channel)
            return
        probe = channel.connection.channel()  # the broker closes it if the arguments differ
        try:
            self._declare(probe)
        except PreconditionFailed as exc:
            log.warning("%s exists with other arguments and is kept as it is (%s); delete it to apply %s",
                        self.name, exc, self.arguments)  # fmt: skip
        else:
            probe.close()

    def _declare(self, channel: Channel) -> None:
        channel.queue_declare(
            self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=self.arguments or None,
        )


@dataclass(frozen=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)
    """Compared (two bindings differing only by their header match are two bindings), not hashed."""

    def declare(self, channel: Channel) -> None:
        channel.queue_bind(self.queue, self.exchange, self.routing_key, self.arguments or None)


Entity = Exchange | Queue | Binding


class DeclarationSet:
    """Declarations that come and go, each counted by the users that need it, declared together: one entry in
    a link's topology for a set that may hold thousands (the bindings of a shared reply queue)."""

    def __init__(self) -> None:
        self._counts: collections.Counter[Entity] = collections.Counter()
        self._declared: set[Entity] = set()

    def __contains__(self, declaration: object) -> bool:
        return declaration in self._counts

    def add(self, declarations: Sequence[Entity]) -> list[Entity]:
        """Count one more user of each; returns those no user needed before."""
        new = [declaration for declaration in declarations if self._counts[declaration] == 0]
        self._counts.update(declarations)
        return new

    def remove(self, declarations: Sequence[Entity]) -> list[Entity]:
        """Count one user less of each; returns those no user needs any more (no longer declared)."""
        self._counts.subtract(declarations)
        unneeded = [declaration for declaration in declarations if self._counts[declaration] <= 0]
        for declaration in unneeded:
            self._counts.pop(declaration, None)
        return unneeded

    def redeclare_all(self) -> None:
        """The broker may have lost them (a new connection, a deleted queue): the next :meth:`declare` declares
        every one."""
        self._declared = set()

    def declare(self, channel: Channel) -> None:
        """Declare those not declared since :meth:`redeclare_all` (also those added meanwhile)."""
        while new := [declaration for declaration in list(self._counts) if declaration not in self._declared]:
            for declaration in new:
                declaration.declare(channel)
                self._declared.add(declaration)


Declaration = Exchange | Queue | Binding | DeclarationSet


@dataclass(frozen=True)
class ServiceTopology:
    """The names of one service's exchanges and queues, and what to declare for each role."""

    service: str
    reply_queue_expires_ms: int = 10 * 60 * 1000
    fanout: bool = False
    """A fanout service broadcasts each request to every server's own queue."""
    max_priority: int | None = None
    """Request queues honour call priorities from 0 to this (``x-max-priority``); None: no priorities."""
    queue_type: str = "classic"
    """``quorum`` makes every queue a replicated quorum queue, for clusters."""
    dead_letter_limit: int | None = DEAD_LETTER_LIMIT
    """Refused requests the dead-letter queue keeps (the oldest dropped first); None: no bound."""

    def __post_init__(self) -> None:
        if self.queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be 'classic' or 'quorum', not {self.queue_type!r}")
        if self.queue_type == "quorum" and self.max_priority is not None:
            raise ValueError("quorum queues have no priorities: give max_priority or queue_type='quorum', not both")

    def _queue(self, name: str, arguments: dict[str, Any]) -> Queue:
        """A durable queue of the service's queue type."""
        if self.queue_type != "classic":
            arguments = {**arguments, "x-queue-type": self.queue_type}
        return Queue(name, arguments=arguments)

    @cached_property
    def request_exchange(self) -> str:
        return f"rpc_{self.service}_request"

    @cached_property
    def default_queue(self) -> str:
        return f"rpc_{self.service}_request"

    @cached_property
    def response_exchange(self) -> str:
        return f"rpc_{self.service}_response"

    @cached_property
    def dead_exchange(self) -> str:
        return f"rpc_{self.service}_dead"

    @cached_property
    def dead_queue(self) -> str:
        return f"rpc_{self.service}_dead"

    def request_queue(self, label: str) -> str:
        return f"rpc_{self.service}_queue_{label}"

    def own_reply_queue(self, client_id: str) -> str:
        """The reply queue of a client given a fixed uuid (the others share one per process)."""
        return f"rpc_{self.service}_{client_id}_response"

    def reply_queue_declaration(self, name: str) -> Queue:
        """A reply queue, durable, of the service's queue type, deleted once unused ``reply_queue_expires``."""
        return self._queue(name, {"x-expires": self.reply_queue_expires_ms})

    @property
    def events_exchange(self) -> str:
        return f"rpc_{self.service}_events"

    def events_queue(self, subscriber: str) -> str:
        return f"rpc_{self.service}_events_{subscriber}"

    def fanout_queue(self, server_name: str) -> str:
        return f"rpc_{self.service}_fanout_{server_name}"

    def _request_queue_declaration(self, name: str) -> Queue:
        arguments: dict[str, Any] = {"x-dead-letter-exchange": self.dead_exchange}
        if self.max_priority is not None:
            arguments["x-max-priority"] = self.max_priority
        return self._queue(name, arguments)

    def exchanges(self) -> list[Declaration]:
        """The exchanges every client and server of the service needs."""
        return [
            Exchange(self.request_exchange, "fanout" if self.fanout else "direct"),
            Exchange(self.response_exchange, "direct"),
            Exchange(self.dead_exchange, "headers"),
            Exchange(self.events_exchange, "topic"),
        ]

    def dead_letter_queue(self) -> list[Declaration]:
        """The queue of the requests servers refuse, bounded to ``dead_letter_limit`` (declared by servers,
        which refuse; one made earlier with another bound is kept, with a warning)."""
        arguments: dict[str, Any] = {}
        if self.dead_letter_limit is not None:
            arguments = {"x-max-length": self.dead_letter_limit, "x-overflow": "drop-head"}
        return [
            replace(self._queue(self.dead_queue, arguments), keep_existing=True),
            Binding(self.dead_queue, self.dead_exchange, arguments={"x-match": "all", HEADER_DEAD: REFUSED}),
        ]

    def default_request_queue(self) -> list[Declaration]:
        """The service's default request queue: calls wait there until a server takes them."""
        return [
            self._request_queue_declaration(self.default_queue),
            Binding(self.default_queue, self.request_exchange, DEFAULT_ROUTING_KEY),
        ]

    def keyed_request_queue(
        self, label: str, routing_key: str | None = None, expires_ms: int | None = None, durable: bool = True
    ) -> list[Declaration]:
        """A per-key request queue ``rpc_{service}_queue_{label}``; with ``expires_ms`` it disappears that
        long after it was last consumed or declared; not ``durable``, it does not outlive a broker restart."""
        name = self.request_queue(label)
        queue = self._request_queue_declaration(name)
        if not durable:
            if self.queue_type == "quorum":
                raise ValueError("quorum queues are always durable: durable=False needs queue_type='classic'")
            queue = replace(queue, durable=False)
        if expires_ms is not None:
            queue.arguments["x-expires"] = expires_ms
        return [queue, Binding(name, self.request_exchange, label if routing_key is None else routing_key)]

    def fanout_server_queue(self, server_name: str, expires_ms: int | None) -> list[Declaration]:
        """A fanout server's own queue, which gets a copy of every request; with ``expires_ms`` it
        disappears that long after its server stopped consuming it."""
        name = self.fanout_queue(server_name)
        queue = self._request_queue_declaration(name)
        if expires_ms is not None:
            queue.arguments["x-expires"] = expires_ms
        return [queue, Binding(name, self.request_exchange)]

    def subscription(self, queue: str, pattern: str, expires_ms: int | None) -> list[Declaration]:
        """A subscriber's queue of events whose topic matches ``pattern``; with ``expires_ms`` it disappears
        that long after its subscriber stopped consuming it."""
        arguments = {} if expires_ms is None else {"x-expires": expires_ms}
        return [self._queue(queue, arguments), Binding(queue, self.events_exchange, pattern)]
