"""The state of an in-process broker as plain data: exchanges, queues, bindings, consumers, unacknowledged
deliveries, and RabbitMQ's decisions about them (routing, prefetch, redelivery, TTL, dead-lettering).

Nothing here blocks or spawns: every method runs to its end at once, and hands deliveries and consumer
cancellations to each channel's :class:`SessionSink`, which decides when its consumer sees them
(:mod:`amphora.memory.connection` queues them for the connection's reader greenlet). Time comes from the
injected ``clock``; whoever owns the broker calls :meth:`Broker.expire` by :meth:`Broker.next_deadline`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from ..amqp.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from ..amqp.message import Properties
from ..amqp.properties import replaced
from .deadletter import dead_lettered
from .queue_arguments import QueueArguments
from .routing import EXCHANGE_TYPES, Binding, Bindings

VHOST = "/"
PERSISTENT = 2
"""The ``delivery_mode`` of a message a durable queue keeps across a restart."""
DELIVERY_COUNT_HEADER = "x-delivery-count"
"""What a quorum queue adds to a message it delivers again: how often it was delivered before."""
PREDECLARED_EXCHANGES = {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
                         "amq.headers": "headers", "amq.match": "headers"}  # fmt: skip


class Published(enum.Enum):
    """What became of a published message: the answer its publisher confirm gives."""

    ROUTED = "routed"  # in at least one queue: acked
    DROPPED = "dropped"  # routed nowhere, not mandatory: acked all the same
    RETURNED = "returned"  # routed nowhere and mandatory: returned (312 NO_ROUTE), then acked
    REFUSED = "refused"  # a full queue with x-overflow reject-publish refused it: nacked


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed to a consumer."""

    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties


class SessionSink(Protocol):
    """Where the broker sends what one channel's consumers receive."""

    def deliver(self, delivery: Delivery) -> None: ...

    def cancelled(self, consumer_tag: str) -> None:
        """The broker cancelled the consumer (its queue was deleted)."""


@dataclass(slots=True)
class Envelope:
    """A message in one queue."""

    body: bytes
    properties: Properties
    exchange: str
    routing_key: str
    expires_at: float | None = None
    redelivered: bool = False
    returns: int = 0  # times it came back unacknowledged


@dataclass(eq=False)
class Consumer:
    tag: str
    queue: Queue
    session: Session
    no_ack: bool
    prefetch: int  # 0: unlimited
    unacked: int = 0

    def has_room(self) -> bool:
        if self.no_ack:
            return True
        session = self.session
        if session.global_prefetch and len(session.unacked) >= session.global_prefetch:
            return False
        return not self.prefetch or self.unacked < self.prefetch


@dataclass(eq=False)
class Session:
    """A channel's state in the broker: its consumers, prefetch and deliveries awaiting an ack."""

    owner: Hashable  # the connection, which exclusive queues belong to
    sink: SessionSink
    prefetch: int = 0  # for the consumers started from now on
    global_prefetch: int = 0
    consumers: dict[str, Consumer] = field(default_factory=dict)
    unacked: dict[int, tuple[Envelope, Consumer]] = field(default_factory=dict)
    delivery_tags: Iterator[int] = field(default_factory=lambda: itertools.count(1))


@dataclass(eq=False)
class Exchange:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    bindings: Bindings = field(init=False)

    def __post_init__(self) -> None:
        self.bindings = Bindings(self.type)


@dataclass(eq=False)
class Queue:
    name: str
    durable: bool
    auto_delete: bool
    owner: Hashable | None  # set for an exclusive queue
    arguments: QueueArguments
    declared_arguments: dict[str, Any]
    levels: list[deque[Envelope]]  # ready messages by priority, the lowest first
    consumers: list[Consumer] = field(default_factory=list)
    next_consumer: int = 0
    last_used: float = 0.0

    def ready(self) -> int:
        return sum(len(level) for level in self.levels)

    def head_level(self) -> deque[Envelope] | None:
        """The messages delivered next: the highest priority that has any."""
        for level in reversed(self.levels):
            if level:
                return level
        return None


class Broker:
    """One virtual host's exchanges and queues, in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.clock = clock
        self.wall_clock = wall_clock
        self.exchanges: dict[str, Exchange] = {
            name: Exchange(name, kind, durable=True, auto_delete=False) for name, kind in PREDECLARED_EXCHANGES.items()
        }
        self.queues: dict[str, Queue] = {}
        self.on_schedule: Callable[[], None] = lambda: None
        """Called when :meth:`next_deadline` became earlier."""
        self._deadlines: list[tuple[float, int, Queue]] = []
        self._deadline_order = itertools.count()

    # --- exchanges -----------------------------------------------------------------------------

    def declare_exchange(
        self, name: str, kind: str, durable: bool = False, auto_delete: bool = False, passive: bool = False
    ) -> None:
        exchange = self.exchanges.get(name)
        if passive:
            self._exchange(name)
            return
        if name == "":
            raise AccessRefused(403, "ACCESS_REFUSED - operation not permitted on the default exchange")
        if name.startswith("amq.") and exchange is None:
            raise AccessRefused(403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
        if kind not in EXCHANGE_TYPES:
            raise NotFound(404, f"NOT_FOUND - exchange type '{kind}' not found")  # RabbitMQ: a command error
        if exchange is None:
            self.exchanges[name] = Exchange(name, kind, durable, auto_delete)
            return
        for what, current, received in (
            ("type", exchange.type, kind),
            ("durable", exchange.durable, durable),
            ("auto_delete", exchange.auto_delete, auto_delete),
        ):
            if current != received:
                raise PreconditionFailed(406, _inequivalent(what, "exchange", name, received, current))

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        exchange = self._exchange(name)
        if name in PREDECLARED_EXCHANGES:
            raise AccessRefused(403, f"ACCESS_REFUSED - operation not permitted on exchange '{name}'")
        if if_unused and exchange.bindings:
            raise PreconditionFailed(406, f"PRECONDITION_FAILED - exchange '{name}' in vhost '{VHOST}' in use")
        del self.exchanges[name]

    def _exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(404, f"NOT_FOUND - no exchange '{name}' in vhost '{VHOST}'")
        return exchange

    # --- queues --------------------------------------------------------------------------------

    def declare_queue(
        self,
        session: Session,
        name: str = "",
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> tuple[str, int, int]:
        """Declare (or with ``passive`` look up) a queue: its name, ready messages and consumers."""
        if passive:
            found = self._queue(name, session)
            self._used(found)  # as in RabbitMQ, a passive declaration uses the queue
            return found.name, found.ready(), len(found.consumers)
        if name.startswith("amq."):
            raise AccessRefused(403, f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")
        name = name or f"amq.gen-{uuid.uuid4().hex}"
        declared = dict(arguments or {})
        queue = self.queues.get(name)
        if queue is not None:
            self._check_owner(queue, session)
            self._check_equivalent(queue, durable, auto_delete, declared)
            self._used(queue)
            return queue.name, queue.ready(), len(queue.consumers)
        parsed = QueueArguments.parse(name, declared)
        if parsed.quorum:
            for invalid, given in (
                ("exclusive", exclusive),
                ("auto-delete", auto_delete),
                ("non-durable", not durable),
            ):
                if given:
                    raise PreconditionFailed(
                        406, f"PRECONDITION_FAILED - invalid property '{invalid}' for queue '{name}' in vhost '{VHOST}'"
                    )
        levels: list[deque[Envelope]] = [deque() for _ in range((parsed.max_priority or 0) + 1)]
        queue = Queue(name, durable, auto_delete, session.owner if exclusive else None, parsed, declared, levels)
        self.queues[name] = queue
        self._used(queue)
        return name, 0, 0

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        target, binding = self._binding(queue, exchange, routing_key, arguments, session)
        if exchange == "":
            raise AccessRefused(403, "ACCESS_REFUSED - operation not permitted on the default exchange")
        target.bindings.add(binding)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        target, binding = self._binding(queue, exchange, routing_key, arguments, session)
        if target.bindings.remove(binding):
            self._delete_exchange_if_unused(target)

    def _binding(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: dict[str, Any] | None,
        session: Session | None,
    ) -> tuple[Exchange, Binding]:
        """The exchange and the binding a (un)bind names; NotFound if either the exchange or the queue is missing."""
        target = self._exchange(exchange)
        self._queue(queue, session)
        return target, Binding(queue, routing_key, dict(arguments or {}))

    def purge_queue(self, name: str, session: Session | None = None) -> int:
        queue = self._queue(name, session)
        count = queue.ready()
        for level in queue.levels:
            level.clear()
        return count

    def delete_queue(
        self, name: str, session: Session | None = None, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete a queue and its ready messages; its consumers are cancelled. Returns the messages it had."""
        queue = self.queues.get(name)
        if queue is None:
            return 0  # RabbitMQ 3.10: deleting a missing queue succeeds
        self._check_owner(queue, session)
        if if_unused and queue.consumers:
            raise PreconditionFailed(406, f"PRECONDITION_FAILED - queue '{name}' in vhost '{VHOST}' in use")
        count = queue.ready()
        if if_empty and count:
            raise PreconditionFailed(406, f"PRECONDITION_FAILED - queue '{name}' in vhost '{VHOST}' is not empty")
        self._remove_queue(queue)
        return count

    def _remove_queue(self, queue: Queue) -> None:
        del self.queues[queue.name]
        for exchange in list(self.exchanges.values()):
            if exchange.bindings.remove_queue(queue.name):
                self._delete_exchange_if_unused(exchange)
        consumers, queue.consumers = queue.consumers, []
        for consumer in consumers:
            del consumer.session.consumers[consumer.tag]
            consumer.session.sink.cancelled(consumer.tag)

    def _delete_exchange_if_unused(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings:
            self.exchanges.pop(exchange.name, None)

    def _queue(self, name: str, session: Session | None = None) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(404, f"NOT_FOUND - no queue '{name}' in vhost '{VHOST}'")
        if session is not None:
            self._check_owner(queue, session)
        return queue

    @staticmethod
    def _check_owner(queue: Queue, session: Session | None) -> None:
        if queue.owner is not None and session is not None and queue.owner is not session.owner:
            raise ResourceLocked(
                405,
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue.name}' in vhost '{VHOST}'."
                " It could be originally declared on another connection or the exclusive property value does not"
                " match that of the original declaration.",
            )

    @staticmethod
    def _check_equivalent(queue: Queue, durable: bool, auto_delete: bool, declared: dict[str, Any]) -> None:
        for what, current, received in (
            ("durable", queue.durable, durable),
            ("auto_delete", queue.auto_delete, auto_delete),
        ):
            if current != received:
                raise PreconditionFailed(406, _inequivalent(what, "queue", queue.name, received, current))
        differing = QueueArguments.differing(queue.declared_arguments, declared)
        if differing is not None:
            what, received, current = differing
            raise PreconditionFailed(406, _inequivalent(what, "queue", queue.name, received, current))

    # --- sessions and consumers ----------------------------------------------------------------

    def open_session(self, owner: Hashable, sink: SessionSink) -> Session:
        return Session(owner, sink)

    def close_session(self, session: Session) -> None:
        """The channel closed: its consumers end and its unacknowledged deliveries go back to their queues."""
        for consumer in list(session.consumers.values()):
            self._remove_consumer(consumer)
        self._requeue(session, list(session.unacked))

    def close_owner(self, owner: Hashable) -> None:
        """The connection closed (after its sessions): its exclusive queues go."""
        for queue in [q for q in self.queues.values() if q.owner is owner]:
            self._remove_queue(queue)

    def restart(self) -> None:
        """What survives a restart of RabbitMQ (once every connection closed): durable exchanges and queues,
        the bindings between them, and in them the persistent messages (a quorum queue keeps all); queue
        expiry counts from now."""
        self.exchanges = {name: exchange for name, exchange in self.exchanges.items() if exchange.durable}
        for queue in list(self.queues.values()):
            if not queue.durable:
                self._remove_queue(queue)
                continue
            if not queue.arguments.quorum:
                for level in queue.levels:
                    kept = [envelope for envelope in level if envelope.properties.delivery_mode == PERSISTENT]
                    level.clear()
                    level.extend(kept)
            self._used(queue)

    def qos(self, session: Session, prefetch_count: int, global_qos: bool = False) -> None:
        """The prefetch of the consumers started from now on (with ``global_qos``: of the whole channel)."""
        if global_qos:
            session.global_prefetch = prefetch_count
        else:
            session.prefetch = prefetch_count
        self._dispatch_session(session)

    def consume(
        self, session: Session, queue_name: str, tag: str, no_ack: bool = False, exclusive: bool = False
    ) -> None:
        queue = self._queue(queue_name, session)
        if tag in session.consumers:
            raise PreconditionFailed(406, f"NOT_ALLOWED - attempt to reuse consumer tag '{tag}'")  # 530 in RabbitMQ
        if exclusive and queue.consumers:
            raise AccessRefused(403, f"ACCESS_REFUSED - queue '{queue.name}' in vhost '{VHOST}' in exclusive use")
        consumer = Consumer(tag, queue, session, no_ack, session.prefetch)
        queue.consumers.append(consumer)
        session.consumers[tag] = consumer
        self._dispatch(queue)

    def cancel(self, session: Session, tag: str) -> None:
        consumer = session.consumers.get(tag)
        if consumer is not None:
            self._remove_consumer(consumer)

    def requeue_leftovers(self, session: Session, prefix: str) -> list[int]:
        """Put the deliveries awaiting an ack of the consumers whose tags start with ``prefix`` back in their
        queues; their delivery tags."""
        tags = [delivery for delivery, (_, consumer) in session.unacked.items() if consumer.tag.startswith(prefix)]
        self._requeue(session, tags)
        return tags

    def _remove_consumer(self, consumer: Consumer) -> None:
        queue = consumer.queue
        del consumer.session.consumers[consumer.tag]
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if not queue.consumers and self.queues.get(queue.name) is queue:
            if queue.auto_delete:
                self._remove_queue(queue)
            else:
                self._used(queue)

    # --- publishing ----------------------------------------------------------------------------

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties, mandatory: bool = False
    ) -> Published:
        """Route a message to its queues (NotFound if the exchange does not exist)."""
        queues = self._route(self._exchange(exchange), routing_key, properties)
        if not queues:
            return Published.RETURNED if mandatory else Published.DROPPED
        refused = False
        for queue in queues:
            envelope = Envelope(body, properties, exchange, routing_key, self._expiry(queue, properties))
            refused |= not self._enqueue(queue, envelope)
        return Published.REFUSED if refused else Published.ROUTED

    def _route(self, exchange: Exchange, routing_key: str, properties: Properties) -> list[Queue]:
        if exchange.name == "":
            queue = self.queues.get(routing_key)
            return [] if queue is None else [queue]
        names = exchange.bindings.queues(routing_key, properties.headers or {})
        return [self.queues[name] for name in names if name in self.queues]

    def _expiry(self, queue: Queue, properties: Properties) -> float | None:
        ttls = [queue.arguments.message_ttl_ms]
        if properties.expiration is not None:
            try:
                ttls.append(int(properties.expiration))
            except ValueError:
                pass  # RabbitMQ refuses it with a channel error; amphora never sends one
        given = [ttl for ttl in ttls if ttl is not None]
        return self.clock() + min(given) / 1000 if given else None

    def _enqueue(self, queue: Queue, envelope: Envelope) -> bool:
        """Put a message in a queue, as its overflow setting allows; False if the queue refused it."""
        arguments = queue.arguments
        if arguments.max_length is not None and queue.ready() >= arguments.max_length:
            if arguments.overflow == "reject-publish":
                return False
            if arguments.overflow == "reject-publish-dlx":
                self._dead_letter(queue, envelope, "maxlen")
                return False
        priority = min(envelope.properties.priority or 0, len(queue.levels) - 1)
        queue.levels[priority].append(envelope)
        if arguments.max_length is not None:
            while queue.ready() > arguments.max_length:
                level = next(level for level in queue.levels if level)  # the lowest priority goes first
                self._dead_letter(queue, level.popleft(), "maxlen")
        self._dispatch(queue)
        if envelope.expires_at is not None:
            self._schedule(envelope.expires_at, queue)
        return True

    # --- acknowledgements ----------------------------------------------------------------------

    def ack(self, session: Session, delivery_tag: int, multiple: bool = False) -> None:
        tags = self._settled_tags(session, delivery_tag, multiple)
        self._dispatch_freed(session, [self._forget_delivery(session, tag)[1] for tag in tags])

    def nack(self, session: Session, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        """Reject one delivery (every one up to it with ``multiple``): back to its queue, else dead-lettered."""
        tags = self._settled_tags(session, delivery_tag, multiple)
        if requeue:
            self._requeue(session, tags)
            return
        freed = []
        for tag in tags:
            envelope, consumer = self._forget_delivery(session, tag)
            self._dead_letter(consumer.queue, envelope, "rejected")
            freed.append(consumer)
        self._dispatch_freed(session, freed)

    def _settled_tags(self, session: Session, delivery_tag: int, multiple: bool) -> list[int]:
        if multiple:
            return [tag for tag in session.unacked if not delivery_tag or tag <= delivery_tag]
        if delivery_tag not in session.unacked:
            raise PreconditionFailed(406, f"PRECONDITION_FAILED - unknown delivery tag {delivery_tag}")
        return [delivery_tag]

    def _forget_delivery(self, session: Session, tag: int) -> tuple[Envelope, Consumer]:
        envelope, consumer = session.unacked.pop(tag)
        consumer.unacked -= 1
        return envelope, consumer

    def _requeue(self, session: Session, tags: list[int]) -> None:
        """Put deliveries back at the head of their queues, in their order, marked redelivered."""
        queues: dict[int, Queue] = {}
        for tag in reversed(tags):
            envelope, consumer = self._forget_delivery(session, tag)
            queue = consumer.queue
            if self.queues.get(queue.name) is not queue:
                continue  # deleted meanwhile
            envelope.redelivered = True
            envelope.returns += 1
            if queue.arguments.quorum:
                headers = {**(envelope.properties.headers or {}), DELIVERY_COUNT_HEADER: envelope.returns}
                envelope.properties = replaced(envelope.properties, headers=headers)
            priority = min(envelope.properties.priority or 0, len(queue.levels) - 1)
            queue.levels[priority].appendleft(envelope)
            queues[id(queue)] = queue
        for queue in queues.values():
            self._dispatch(queue)
        if session.global_prefetch:
            self._dispatch_session(session)

    # --- delivering ----------------------------------------------------------------------------

    def _dispatch_freed(self, session: Session, consumers: list[Consumer]) -> None:
        """Deliver to consumers that settled deliveries made room for: those ``consumers``, or under a channel
        prefetch every consumer of the channel."""
        if session.global_prefetch:
            self._dispatch_session(session)
            return
        for queue in {id(consumer.queue): consumer.queue for consumer in consumers}.values():
            if self.queues.get(queue.name) is queue:
                self._dispatch(queue)

    def _dispatch_session(self, session: Session) -> None:
        for queue in {id(c.queue): c.queue for c in session.consumers.values()}.values():
            self._dispatch(queue)

    def _dispatch(self, queue: Queue) -> None:
        """Hand ready messages to consumers with room, round-robin, until either runs out."""
        consumers = queue.consumers
        now = self.clock()
        while consumers:
            level = queue.head_level()
            if level is None:
                return
            head = level[0]
            if head.expires_at is not None and head.expires_at < now:
                self._dead_letter(queue, level.popleft(), "expired")
                continue
            consumer = self._next_consumer(queue)
            if consumer is None:
                return
            level.popleft()
            session = consumer.session
            tag = next(session.delivery_tags)
            if not consumer.no_ack:
                session.unacked[tag] = (head, consumer)
                consumer.unacked += 1
            session.sink.deliver(
                Delivery(
                    consumer.tag, tag, head.redelivered, head.exchange, head.routing_key, head.body, head.properties
                )
            )

    @staticmethod
    def _next_consumer(queue: Queue) -> Consumer | None:
        consumers = queue.consumers
        for step in range(len(consumers)):
            index = (queue.next_consumer + step) % len(consumers)
            if consumers[index].has_room():
                queue.next_consumer = index + 1
                return consumers[index]
        return None

    # --- time: message TTL and queue expiry ----------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to do next (``clock`` time), None if never."""
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self) -> None:
        """Dead-letter the messages whose TTL passed at the head of their queue, and delete the queues unused
        for their ``x-expires``."""
        now = self.clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, queue = heapq.heappop(self._deadlines)
            if self.queues.get(queue.name) is not queue:
                continue
            expires = queue.arguments.expires_ms
            if expires is not None and not queue.consumers and queue.last_used + expires / 1000 <= now:
                self._remove_queue(queue)
                continue
            for level in queue.levels:
                while level and level[0].expires_at is not None and level[0].expires_at <= now:
                    self._dead_letter(queue, level.popleft(), "expired")

    def _used(self, queue: Queue) -> None:
        """The queue was declared or lost its last consumer: its ``x-expires`` counts from now."""
        queue.last_used = self.clock()
        if queue.arguments.expires_ms is not None:
            self._schedule(queue.last_used + queue.arguments.expires_ms / 1000, queue)

    def _schedule(self, when: float, queue: Queue) -> None:
        earliest = self.next_deadline()
        heapq.heappush(self._deadlines, (when, next(self._deadline_order), queue))
        if earliest is None or when < earliest:
            self.on_schedule()

    # --- dead-lettering ------------------------------------------------------------------------

    def _dead_letter(self, queue: Queue, envelope: Envelope, reason: str) -> None:
        """Republish a message to its queue's dead-letter exchange (dropped if it has none, or it is missing)."""
        exchange_name = queue.arguments.dead_letter_exchange
        if exchange_name is None or exchange_name not in self.exchanges:
            return
        routing_key = queue.arguments.dead_letter_routing_key or envelope.routing_key
        properties = dead_lettered(
            envelope.properties, reason, queue.name, envelope.exchange, envelope.routing_key, self.wall_clock()
        )
        deaths = cast(list[dict[str, Any]], (properties.headers or {})["x-death"])
        for target in self._route(self.exchanges[exchange_name], routing_key, properties):
            if _is_cycle(target.name, deaths):
                continue
            dead = Envelope(envelope.body, properties, exchange_name, routing_key, self._expiry(target, properties))
            self._enqueue(target, dead)


def _is_cycle(queue: str, deaths: list[dict[str, Any]]) -> bool:
    """Whether dead-lettering into ``queue`` would close a loop without a rejection in it: RabbitMQ drops
    such a message instead of letting it expire round and round."""
    return any(d.get("queue") == queue for d in deaths) and all(d.get("reason") != "rejected" for d in deaths)


def _inequivalent(what: str, kind: str, name: str, received: Any, current: Any) -> str:
    return (
        f"PRECONDITION_FAILED - inequivalent arg '{what}' for {kind} '{name}' in vhost '{VHOST}':"
        f" received {_shown(received)} but current is {_shown(current)}"
    )


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if value is None:
        return "none"
    return f"'{value}'"
