"""MemoryConnection and MemoryChannel: the connection and channel API of :mod:`amphora.amqp` (``API.md``) over
an in-process :class:`~amphora.memory.broker.Broker` instead of a socket.

As with a network broker, what the broker sends (deliveries, publisher confirms, returns, cancellations,
channel closes) reaches the callbacks in the connection's reader greenlet, never inside the call that caused
it; and a synchronous method returns only after everything the broker sent before its answer was handled.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Self, cast

import gevent
from gevent.event import Event

from ..amqp.channel import DeclareOk, OnCancel, OnMessage
from ..amqp.errors import (
    ChannelClosed,
    ChannelLimitReached,
    ConnectionClosed,
    MessageNacked,
    MessageReturned,
)
from ..amqp.frames import HEADER_FRAME_OVERHEAD, check_publishable
from ..amqp.message import Confirmation, Message, Properties
from ..amqp.properties import decode_properties, encode_properties
from ..amqp.quiet import QuietReads
from .broker import Delivery, Published, Session
from .node import memory_node

if TYPE_CHECKING:
    from ..amqp.channel import Channel
    from ..amqp.parameters import ConnectionParameters

log = logging.getLogger(__name__)

FRAME_MAX = 131072
CHANNEL_MAX = 2047
"""What RabbitMQ offers by default: a connection gets these or the smaller values its parameters ask for."""
SERVER_PROPERTIES = {"product": "amphora memory broker", "capabilities": {"publisher_confirms": True}}
_EMPTY_PROPERTIES = Properties()

Task = Callable[[], None]


class _Consumer(NamedTuple):
    on_message: OnMessage
    on_cancel: OnCancel | None


class MemoryConnection:
    """A connection to the in-process broker its parameters name (see ``amphora/amqp/API.md``)."""

    def __init__(self, parameters: ConnectionParameters) -> None:
        self.parameters = parameters
        self.node = memory_node(parameters.host)
        self.broker = self.node.broker
        self.server_properties: dict[str, Any] = dict(SERVER_PROPERTIES)
        self.frame_max = min(parameters.frame_max or FRAME_MAX, FRAME_MAX)
        self.channel_max = min(parameters.channel_max or CHANNEL_MAX, CHANNEL_MAX)
        self.heartbeat = 0  # nothing to miss
        self.blocked = False
        self.reads = QuietReads()  # no socket: holding reads does nothing
        self.write_backlog = 0
        self._channels: dict[int, MemoryChannel] = {}
        self._inbox: collections.deque[Task] = collections.deque()
        self._wakeup = Event()
        self._reader: gevent.Greenlet | None = None
        self._round_trips: set[Event] = set()
        self.ending: BaseException | None = None
        """Why the broker is closing the connection, until the reader says so."""
        self._error: BaseException | None = None
        self._close_callbacks: list[Callable[[BaseException | None], None]] = []
        self._consumer_tags = itertools.count(1)

    def open(self) -> Self:
        self._reader = gevent.spawn(self._read_loop)
        self.node.connections.add(self)
        return self

    # --- what the broker sends: run in the reader greenlet --------------------------------------

    def post(self, task: Task) -> None:
        """Run ``task`` in the reader greenlet, after everything posted before it (nothing once closed)."""
        if self._error is None:
            self._inbox.append(task)
            self._wakeup.set()

    def round_trip(self) -> None:
        """Wait until the reader handled everything posted so far, as a synchronous method waits for its
        answer behind the frames the broker sent before it; raise why the connection ended, if it did."""
        self._raise_if_closed()
        if gevent.getcurrent() is self._reader:
            return
        answered, reached = Event(), []

        def answer() -> None:
            reached.append(True)
            answered.set()

        self._round_trips.add(answered)
        self.post(answer)
        try:
            answered.wait()
        finally:
            self._round_trips.discard(answered)
        if not reached:  # the connection ended first
            self._raise_if_closed()

    def end_soon(self, error: BaseException) -> None:
        """The broker closes the connection for ``error``: it ignores what comes from now on, and the reader
        ends the connection after what was sent before."""
        if self.ending is None:
            self.ending = error
            self.post(lambda: self.fail(error))

    def _read_loop(self) -> None:
        inbox = self._inbox
        while self._error is None:  # fail() kills the reader, or empties the inbox when the reader calls it
            self._wakeup.wait()
            self._wakeup.clear()
            while inbox:
                task = inbox.popleft()
                try:
                    task()
                except Exception:
                    log.exception("memory broker: handling %r failed", task)

    # --- channels ------------------------------------------------------------------------------

    def channel(self) -> Channel:
        """Open a new channel; ChannelLimitReached if all ``channel_max`` are open."""
        self._raise_if_closed()
        channel_id = next((i for i in range(1, self.channel_max + 1) if i not in self._channels), None)
        if channel_id is None:
            raise ChannelLimitReached(f"all {self.channel_max} channels are in use")
        channel = self._channels[channel_id] = MemoryChannel(self, channel_id)
        self.round_trip()
        return cast("Channel", channel)

    def forget_channel(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)

    def new_consumer_tag(self) -> str:
        return f"amphora.{next(self._consumer_tags)}"

    # --- the rest of the connection API ---------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Nothing waits to be written: True while open."""
        return self.is_open

    def wait_writable(self) -> None:
        """Never blocks: the broker is in the process."""

    def check_stall(self) -> None:
        """No heartbeat to miss: nothing to check."""

    def hold_reads(self, holder: object) -> None:
        """Nothing to hold: the broker's answers cost no wake-up of a socket reader."""

    def release_reads(self, holder: object) -> None:
        """Nothing held."""

    def reads_may_wait(self, holder: object) -> None:
        """Nothing held."""

    def add_close_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        self._close_callbacks.append(callback)

    def add_blocked_callback(self, callback: Callable[[str], None]) -> None:
        """The memory broker has no alarms and never blocks publishers: ``callback`` is never called."""

    def add_unblocked_callback(self, callback: Callable[[], None]) -> None:
        """Never called either."""

    @property
    def is_open(self) -> bool:
        return self._error is None and self._reader is not None

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection: its channels' unacknowledged deliveries are requeued, its exclusive queues go."""
        self.fail(ConnectionClosed(200, "closed by the client"), clean=True)

    def fail(self, error: BaseException, clean: bool = False) -> None:
        """End the connection: every waiter on it and its channels gets ``error``."""
        if self._error is not None:
            return
        self._error = error
        if not clean:
            log.warning("connection to %s lost: %s", self.parameters.url, error)
        for channel in list(self._channels.values()):
            channel.fail(error)
        self._channels.clear()
        self.broker.close_owner(self)
        self.node.connections.discard(self)
        self._inbox.clear()
        for answered in list(self._round_trips):
            answered.set()
        if self._reader is not None and self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)
        for callback in list(self._close_callbacks):
            try:
                callback(None if clean else error)
            except Exception:
                log.exception("connection callback %r failed", callback)

    def _raise_if_closed(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemoryConnection {self.parameters.url} {'open' if self.is_open else 'closed'}>"


class MemoryChannel:
    """A channel of a :class:`MemoryConnection` (see ``amphora/amqp/API.md``)."""

    def __init__(self, connection: MemoryConnection, channel_id: int) -> None:
        self.id = channel_id
        self.connection = connection
        self._broker = connection.broker
        self._post = connection.post
        self._session: Session = self._broker.open_session(connection, self)
        self._error: BaseException | None = None
        self._refusal: ChannelClosed | None = None  # the broker closed the channel; the reader has not said so yet
        self._confirming = False
        self._unconfirmed: dict[Confirmation, None] = {}  # in publish order
        self._consumers: dict[str, _Consumer] = {}
        self._requeued: set[int] = set()  # delivery tags requeued when their consumer was cancelled
        self._close_callbacks: list[Callable[[BaseException | None], None]] = []
        self._return_callbacks: list[Callable[[Message, MessageReturned], None]] = []

    # --- synchronous methods -------------------------------------------------------------------

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a broker operation as a synchronous method: its answer, or its channel error (which closes the
        channel), after what the broker sent before."""
        self._raise_if_closed()
        try:
            result = operation(*args, **kwargs)
        except ChannelClosed as exc:
            self._refused(exc)
            self.connection.round_trip()
            raise exc from None
        self.connection.round_trip()
        return result

    def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self._call(self._broker.declare_exchange, exchange, exchange_type, durable, auto_delete, passive)

    def exchange_delete(self, exchange: str, if_unused: bool = False) -> None:
        self._call(self._broker.delete_exchange, exchange, if_unused)

    def queue_declare(
        self,
        queue: str = "",
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> DeclareOk:
        declare = self._broker.declare_queue
        return DeclareOk(
            *self._call(declare, self._session, queue, durable, exclusive, auto_delete, passive, arguments)
        )

    def queue_bind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None
    ) -> None:
        self._call(self._broker.bind_queue, queue, exchange, routing_key, arguments, self._session)

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None
    ) -> None:
        self._call(self._broker.unbind_queue, queue, exchange, routing_key, arguments, self._session)

    def queue_purge(self, queue: str) -> int:
        return int(self._call(self._broker.purge_queue, queue, self._session))

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False) -> int:
        return int(self._call(self._broker.delete_queue, queue, self._session, if_unused, if_empty))

    def basic_qos(self, prefetch_count: int = 0, prefetch_size: int = 0, global_qos: bool = False) -> None:
        self._call(self._broker.qos, self._session, prefetch_count, global_qos)

    def confirm_select(self) -> None:
        self._call(lambda: None)
        self._confirming = True

    def basic_consume(
        self,
        queue: str,
        on_message: OnMessage,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str = "",
        arguments: dict[str, Any] | None = None,
        on_cancel: OnCancel | None = None,
    ) -> str:
        """Start a consumer; ``on_message`` runs in the reader greenlet and must not block."""
        tag = consumer_tag or self.connection.new_consumer_tag()
        self._consumers[tag] = _Consumer(on_message, on_cancel)
        try:
            self._call(self._broker.consume, self._session, queue, tag, no_ack, exclusive)
        except BaseException:
            self._consumers.pop(tag, None)
            raise
        return tag

    def basic_cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries already sent still reach its callback."""
        self._call(self._broker.cancel, self._session, consumer_tag)
        self._consumers.pop(consumer_tag, None)

    def requeue_unacked(self, consumer_prefix: str) -> None:
        """Hand back the unacknowledged deliveries of the consumers whose tags start with ``consumer_prefix``;
        later settles of them are dropped."""
        self._requeued.update(self._call(self._broker.requeue_leftovers, self._session, consumer_prefix))

    # --- publishing ----------------------------------------------------------------------------

    def basic_publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> Confirmation | None:
        """Publish a message; with confirms on, return its :class:`Confirmation`."""
        self._raise_if_closed()
        properties = properties or _EMPTY_PROPERTIES
        connection = self.connection
        check_publishable(routing_key, properties, connection.frame_max)
        encoded = encode_properties(properties)
        body = bytes(body)
        confirmation = None
        if self._confirming:
            confirmation = Confirmation()
            self._unconfirmed[confirmation] = None
        if len(encoded) + HEADER_FRAME_OVERHEAD > connection.frame_max:  # past the check only if it was patched
            connection.end_soon(ConnectionClosed(501, "FRAME_ERROR - the content header is larger than frame_max"))
        if connection.ending is not None:  # RabbitMQ reads nothing more of a connection it is closing
            return confirmation
        properties = decode_properties(encoded)  # as a consumer of RabbitMQ gets them
        try:
            outcome = self._broker.publish(exchange, routing_key, body, properties, mandatory)
        except ChannelClosed as exc:  # no such exchange: RabbitMQ closes the channel after the publish
            self._refused(exc)
            return confirmation
        self._post(lambda: self._on_published(outcome, body, properties, exchange, routing_key, confirmation))
        return confirmation

    def add_return_callback(self, callback: Callable[[Message, MessageReturned], None]) -> None:
        """Call ``callback(message, error)`` for each returned message no confirmation claims."""
        self._return_callbacks.append(callback)

    def _on_published(
        self,
        outcome: Published,
        body: bytes,
        properties: Properties,
        exchange: str,
        routing_key: str,
        confirmation: Confirmation | None,
    ) -> None:
        if self._error is not None:
            return
        error: BaseException | None = None
        if outcome is Published.RETURNED:
            message = Message(cast("Channel", self), body, properties, exchange, routing_key)
            error = MessageReturned(312, "NO_ROUTE", message)
            if confirmation is None:
                self._on_returned(message, error)
        elif outcome is Published.REFUSED:
            error = MessageNacked("the broker nacked the message")
        if confirmation is not None:
            self._unconfirmed.pop(confirmation, None)
            confirmation.settle(error)

    def _on_returned(self, message: Message, error: MessageReturned) -> None:
        for callback in self._return_callbacks:
            try:
                callback(message, error)
            except Exception:
                log.exception("return callback %r failed", callback)
        if not self._return_callbacks:
            log.warning("message to %r/%r returned: %s", message.exchange, message.routing_key, error)

    # --- acknowledging deliveries --------------------------------------------------------------

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._settle(self._broker.ack, delivery_tag, multiple)

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._settle(self._broker.nack, delivery_tag, multiple, requeue)

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self._settle(self._broker.nack, delivery_tag, False, requeue)

    def flush_acks(self) -> None:
        """Acks reach the broker at once: nothing to flush."""

    def _settle(self, operation: Callable[..., None], delivery_tag: int, multiple: bool, *args: Any) -> None:
        self._raise_if_closed()
        if not multiple and delivery_tag in self._requeued:  # requeued when its consumer was cancelled
            self._requeued.discard(delivery_tag)
            return
        try:
            operation(self._session, delivery_tag, multiple, *args)
        except ChannelClosed as exc:  # an unknown delivery tag: RabbitMQ closes the channel
            self._refused(exc)

    # --- what the broker sends (SessionSink) ---------------------------------------------------

    def deliver(self, delivery: Delivery) -> None:
        self._post(lambda: self._on_delivery(delivery))

    def cancelled(self, consumer_tag: str) -> None:
        self._post(lambda: self._on_cancelled(consumer_tag))

    def _on_delivery(self, delivery: Delivery) -> None:
        consumer = self._consumers.get(delivery.consumer_tag)
        if consumer is None or self._error is not None:
            return
        message = Message(
            cast("Channel", self),
            delivery.body,
            delivery.properties,
            delivery.exchange,
            delivery.routing_key,
            delivery.delivery_tag,
            delivery.redelivered,
            delivery.consumer_tag,
        )
        try:
            consumer.on_message(message)
        except Exception:
            log.exception("consumer callback %r failed", consumer.on_message)

    def _on_cancelled(self, consumer_tag: str) -> None:
        consumer = self._consumers.pop(consumer_tag, None)
        log.info("the broker cancelled consumer %r on channel %d", consumer_tag, self.id)
        if consumer is not None and consumer.on_cancel is not None and self._error is None:
            try:
                consumer.on_cancel(consumer_tag)
            except Exception:
                log.exception("cancel callback %r failed", consumer.on_cancel)

    # --- closing -------------------------------------------------------------------------------

    def _refused(self, error: ChannelClosed) -> None:
        """The broker closed the channel for ``error``: it forgets the channel now, the reader says so next."""
        if self._refusal is None:
            self._refusal = error
            self._broker.close_session(self._session)
            self._post(lambda: self.fail(error))

    @property
    def is_open(self) -> bool:
        return self._error is None

    def close(self) -> None:
        """Close the channel (a no-op if it is already closed): its unacknowledged deliveries are requeued."""
        if self._error is not None:
            return
        self.fail(ChannelClosed(200, "closed by the client"), clean=True)

    def add_close_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        self._close_callbacks.append(callback)

    def fail(self, error: BaseException, clean: bool = False) -> None:
        """End the channel: its unconfirmed publishes get ``error``, its close callbacks are called."""
        if self._error is not None:
            return
        self._error = error
        if self._refusal is None:
            self._broker.close_session(self._session)
        self.connection.forget_channel(self.id)
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for confirmation in unconfirmed:
            confirmation.settle(error)
        for callback in self._close_callbacks:
            try:
                callback(None if clean else error)
            except Exception:
                log.exception("channel close callback %r failed", callback)

    def _raise_if_closed(self) -> None:
        error = self._error or self._refusal
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return f"<MemoryChannel {self.id} {'open' if self.is_open else 'closed'}>"
