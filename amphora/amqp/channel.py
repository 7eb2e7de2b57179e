"""An AMQP channel: synchronous methods, publishing with confirms, consumers, returns."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from gevent.event import AsyncResult
from gevent.lock import Semaphore
from pamqp import commands

from . import frames
from .acks import AckGatherer
from .errors import (
    AMQPError,
    ChannelClosed,
    MessageNacked,
    MessageReturned,
    ProtocolError,
    channel_error,
)
from .frames import ContentHeader
from .message import Confirmation, Message, Properties
from .methods import Ack, Deliver, Nack, Return
from .properties import replaced

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

Basic = commands.Basic
PUBLISH_SEQ_HEADER = "x-amphora-publish-seq"
"""Header stamped on a mandatory confirmed publish that its message_id or correlation_id cannot identify, so a
basic.return finds the publish it belongs to."""
_EMPTY_PROPERTIES = Properties()
_PUBLISH_FRAME_CACHE_SIZE = 512

OnMessage = Callable[[Message], None]
OnCancel = Callable[[str], None]


class DeclareOk(NamedTuple):
    queue: str
    message_count: int
    consumer_count: int


class _Consumer(NamedTuple):
    on_message: OnMessage
    on_cancel: OnCancel | None
    no_ack: bool


class Channel:
    """One channel of a :class:`~amphora.amqp.connection.Connection`; see ``amphora/amqp/API.md``."""

    def __init__(self, connection: Connection, channel_id: int) -> None:
        self.id = channel_id
        self.connection = connection
        self._send = connection.send
        self._error: BaseException | None = None
        self._rpc_lock = Semaphore()
        self._rpc_waiter: AsyncResult | None = None
        self._rpc_expect: tuple[type, ...] = ()
        self._consumers: dict[str, _Consumer] = {}
        self._acks = AckGatherer(channel_id, connection.send)
        self._confirming = False
        self._publish_seq = 0
        self._lowest_unconfirmed = 1
        self._unconfirmed: dict[int, Confirmation] = {}
        self._return_seqs: dict[str, int] = {}  # return key -> publish seq, for unconfirmed mandatory publishes
        self._return_keys: dict[int, str] = {}  # the same, reversed
        self._publish_frames: dict[tuple[str, str, bool], bytes] = {}
        self._content_method: Deliver | Return | None = None
        self._content_header: ContentHeader | None = None
        self._content_parts: list[bytes] = []
        self._content_missing = 0
        self._close_callbacks: list[Callable[[BaseException | None], None]] = []
        self._return_callbacks: list[Callable[[Message, MessageReturned], None]] = []
        self._method_handlers: dict[type, Callable[[Any], None]] = {
            Deliver: self._on_content_method,
            Return: self._on_content_method,
            Ack: self._on_ack,
            Nack: self._on_nack,
            Basic.Cancel: self._on_server_cancel,
            commands.Channel.Close: self._on_server_close,
            commands.Channel.Flow: self._on_flow,
            commands.Channel.CloseOk: self._on_close_ok,
        }

    # --- synchronous methods -------------------------------------------------------------------

    def _rpc(self, method: Any, *expect: type) -> Any:
        """Send a synchronous method and wait for its answer; one in flight per channel."""
        with self._rpc_lock, self.connection.reads.awaiting_answer():
            self._raise_if_closed()
            waiter = self._rpc_waiter = AsyncResult()
            self._rpc_expect = expect
            try:
                self._send(frames.method_frame(self.id, method))
                return waiter.get()
            finally:
                self._rpc_waiter = None

    def open(self) -> None:
        """Open the channel on the broker. Called by the connection."""
        self._rpc(commands.Channel.Open(), commands.Channel.OpenOk)

    def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self._rpc(
            commands.Exchange.Declare(
                exchange=exchange,
                exchange_type=exchange_type,
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                arguments=arguments,
            ),
            commands.Exchange.DeclareOk,
        )

    def exchange_delete(self, exchange: str, if_unused: bool = False) -> None:
        self._rpc(commands.Exchange.Delete(exchange=exchange, if_unused=if_unused), commands.Exchange.DeleteOk)

    def queue_declare(
        self,
        queue: str = "",
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> DeclareOk:
        ok = self._rpc(
            commands.Queue.Declare(
                queue=queue,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
            ),
            commands.Queue.DeclareOk,
        )
        return DeclareOk(ok.queue, ok.message_count, ok.consumer_count)

    def queue_bind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None
    ) -> None:
        self._rpc(
            commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments),
            commands.Queue.BindOk,
        )

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None
    ) -> None:
        self._rpc(
            commands.Queue.Unbind(queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments),
            commands.Queue.UnbindOk,
        )

    def queue_purge(self, queue: str) -> int:
        return int(self._rpc(commands.Queue.Purge(queue=queue), commands.Queue.PurgeOk).message_count)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False) -> int:
        ok = self._rpc(
            commands.Queue.Delete(queue=queue, if_unused=if_unused, if_empty=if_empty), commands.Queue.DeleteOk
        )
        return int(ok.message_count)

    def basic_qos(self, prefetch_count: int = 0, prefetch_size: int = 0, global_qos: bool = False) -> None:
        """Set the prefetch; acks are then held back until half a prefetch gathered, or ACK_DELAY passed.

        With several consumers on the channel, the smallest prefetch decides, so none waits for acks.
        """
        self._rpc(Basic.Qos(prefetch_size, prefetch_count, global_qos), Basic.QosOk)
        self._acks.set_prefetch(prefetch_count, shared=bool(self._consumers))

    def confirm_select(self) -> None:
        """Turn on publisher confirms: from now on :meth:`basic_publish` returns a Confirmation."""
        self._rpc(commands.Confirm.Select(), commands.Confirm.SelectOk)
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
        self._consumers[tag] = _Consumer(on_message, on_cancel, no_ack)
        try:
            self._rpc(
                Basic.Consume(queue=queue, consumer_tag=tag, no_ack=no_ack, exclusive=exclusive, arguments=arguments),
                Basic.ConsumeOk,
            )
        except BaseException:
            self._consumers.pop(tag, None)
            raise
        return tag

    def basic_cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries already sent still reach its callback."""
        self._rpc(Basic.Cancel(consumer_tag=consumer_tag), Basic.CancelOk)
        self._consumers.pop(consumer_tag, None)

    def requeue_unacked(self, consumer_prefix: str) -> None:
        """Hand back to their queues the unacknowledged deliveries of the (cancelled) consumers whose tags
        start with ``consumer_prefix``, whose owner goes away while the channel stays open for others; later
        settles of them are dropped (the broker would close the channel for them)."""
        for tag in self._acks.leftovers(consumer_prefix):
            self.basic_reject(tag, requeue=True)

    # --- publishing ----------------------------------------------------------------------------

    def basic_publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> Confirmation | None:
        """Publish a message; with confirms on, return its :class:`Confirmation`.

        Blocks only while the connection's write backlog is over its limit. Never yields between the
        frames of one message, so any number of greenlets may publish on one channel.
        """
        connection = self.connection
        if connection.write_backlog > 0:
            connection.wait_writable()
        self._raise_if_closed()
        key = (exchange, routing_key, mandatory)
        method_bytes = self._publish_frames.get(key)
        if method_bytes is None:
            method_bytes = self._publish_method(key)
        properties = properties or _EMPTY_PROPERTIES
        if not self._confirming:
            self._send(*frames.content_frames(self.id, method_bytes, body, properties, connection.frame_max))
            return None
        seq = self._publish_seq + 1
        return_key = None
        if mandatory:
            return_key = self._return_key(properties)
            if return_key is None:
                properties = _with_header(properties, PUBLISH_SEQ_HEADER, seq)
        self._send(*frames.content_frames(self.id, method_bytes, body, properties, connection.frame_max))
        self._publish_seq = seq
        confirmation = self._unconfirmed[seq] = Confirmation()
        if return_key is not None:
            self._return_seqs[return_key] = seq
            self._return_keys[seq] = return_key
        return confirmation

    def _return_key(self, properties: Properties) -> str | None:
        """What identifies a mandatory publish when it is returned: its message_id, else its correlation_id;
        None when it has neither, or another unconfirmed publish has the same (then it needs the header)."""
        key = properties.message_id or properties.correlation_id
        if not key or key in self._return_seqs or PUBLISH_SEQ_HEADER in (properties.headers or ()):
            return None
        return key

    def _publish_method(self, key: tuple[str, str, bool]) -> bytes:
        exchange, routing_key, mandatory = key
        data = frames.method_frame(
            self.id, Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
        )
        if len(self._publish_frames) >= _PUBLISH_FRAME_CACHE_SIZE:
            self._publish_frames.clear()
        self._publish_frames[key] = data
        return data

    def add_return_callback(self, callback: Callable[[Message, MessageReturned], None]) -> None:
        """Call ``callback(message, error)`` for each returned message no confirmation claims."""
        self._return_callbacks.append(callback)

    # --- acknowledging deliveries --------------------------------------------------------------

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery. Single acks are gathered and sent as few frames as possible: at the end of
        the loop iteration once half the prefetch gathered (every one without :meth:`basic_qos`), else at most
        ``amphora.amqp.acks.ACK_DELAY`` seconds later."""
        self._raise_if_closed()
        self._acks.ack(delivery_tag, multiple)

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        """Nack a delivery (every one up to it with ``multiple``); a single one no longer outstanding: nothing."""
        self._raise_if_closed()
        if self._acks.settled(delivery_tag, multiple):
            self._send(frames.method_frame(self.id, Basic.Nack(delivery_tag, multiple, requeue)))

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        """Reject a delivery; one no longer outstanding: nothing."""
        self._raise_if_closed()
        if self._acks.settled(delivery_tag, False):
            self._send(frames.method_frame(self.id, Basic.Reject(delivery_tag, requeue)))

    def flush_acks(self) -> None:
        """Send the gathered acks now."""
        self._acks.flush()

    # --- incoming frames (reader greenlet) -----------------------------------------------------

    def on_frame(self, frame_type: int, payload: frames.Payload) -> None:
        """Handle one frame for this channel. Called by the connection's reader."""
        if self._error is not None:  # closed by us, and the broker's CloseOk still to come: the rest is moot
            if isinstance(payload, commands.Channel.CloseOk):
                self.connection.forget_channel(self.id)
            return
        if frame_type == frames.FRAME_BODY:
            self._on_body(payload)  # type: ignore[arg-type]
        elif frame_type == frames.FRAME_HEADER:
            self._on_header(payload)  # type: ignore[arg-type]
        else:
            handler = self._method_handlers.get(type(payload))
            if handler is not None:
                handler(payload)
            elif self._rpc_waiter is not None and isinstance(payload, self._rpc_expect):
                self._rpc_waiter.set(payload)
            else:
                raise ProtocolError(f"unexpected {payload!r} on channel {self.id}")

    def _on_content_method(self, method: Deliver | Return) -> None:
        if self._content_method is not None:
            raise ProtocolError(
                f"Basic.{type(method).__name__} arrived before the previous message's content on channel {self.id}"
            )
        self._content_method = method

    def _on_header(self, header: ContentHeader) -> None:
        if self._content_method is None or self._content_header is not None:
            raise ProtocolError(f"unexpected content header on channel {self.id}")
        self._content_header = header
        self._content_missing = header.body_size
        if header.body_size == 0:
            self._on_content(b"")

    def _on_body(self, data: bytes) -> None:
        if self._content_header is None:
            raise ProtocolError(f"unexpected content body on channel {self.id}")
        missing = self._content_missing = self._content_missing - len(data)
        if missing > 0:
            self._content_parts.append(data)
            return
        if missing < 0:
            raise ProtocolError(f"content body longer than announced on channel {self.id}")
        if self._content_parts:
            self._content_parts.append(data)
            data = b"".join(self._content_parts)
            self._content_parts = []
        self._on_content(data)

    def _on_content(self, body: bytes) -> None:
        method, header = self._content_method, self._content_header
        assert method is not None and header is not None
        self._content_method = self._content_header = None
        if isinstance(method, Deliver):
            self._on_delivery(method, body, header.properties)
        else:
            message = Message(self, body, header.properties, method.exchange, method.routing_key)
            self._on_returned(message, MessageReturned(method.reply_code, method.reply_text, message))

    def _on_delivery(self, method: Deliver, body: bytes, properties: Properties) -> None:
        consumer = self._consumers.get(method.consumer_tag)
        if consumer is None:
            log.warning("delivery for unknown consumer %r on channel %d", method.consumer_tag, self.id)
            return
        tag = method.delivery_tag
        message = Message(
            self, body, properties, method.exchange, method.routing_key, tag, method.redelivered, method.consumer_tag
        )
        if not consumer.no_ack:
            self._acks.delivered(tag, method.consumer_tag)
        try:
            consumer.on_message(message)
        except Exception:
            log.exception("consumer callback %r failed", consumer.on_message)

    def _on_returned(self, message: Message, error: MessageReturned) -> None:
        properties = message.properties
        seq = (properties.headers or {}).get(PUBLISH_SEQ_HEADER)
        if not isinstance(seq, int):
            seq = self._return_seqs.get(properties.message_id or properties.correlation_id or "")
        confirmation = self._pop_unconfirmed(seq) if seq is not None else None
        if confirmation is not None:
            confirmation.settle(error)
            return
        for callback in self._return_callbacks:
            try:
                callback(message, error)
            except Exception:
                log.exception("return callback %r failed", callback)
        if not self._return_callbacks:
            log.warning("message to %r/%r returned: %s", message.exchange, message.routing_key, error)

    def _on_ack(self, frame: Ack) -> None:
        self._settle(frame.delivery_tag, frame.multiple, None)

    def _on_nack(self, frame: Nack) -> None:
        self._settle(frame.delivery_tag, frame.multiple, MessageNacked("the broker nacked the message"))

    def _settle(self, tag: int, multiple: bool, error: BaseException | None) -> None:
        if multiple:
            tag = tag or self._publish_seq  # tag 0 with multiple means every outstanding publish
            for seq in range(self._lowest_unconfirmed, tag + 1):
                confirmation = self._pop_unconfirmed(seq)
                if confirmation is not None:
                    confirmation.settle(error)
            self._lowest_unconfirmed = max(self._lowest_unconfirmed, tag + 1)
            return
        confirmation = self._pop_unconfirmed(tag)
        if confirmation is not None:
            confirmation.settle(error)
        unconfirmed = self._unconfirmed
        lowest = self._lowest_unconfirmed
        while lowest <= self._publish_seq and lowest not in unconfirmed:
            lowest += 1
        self._lowest_unconfirmed = lowest

    def _pop_unconfirmed(self, seq: int) -> Confirmation | None:
        """Forget an unconfirmed publish (and its return key); None if it is not (or no longer) unconfirmed."""
        if self._return_keys:
            key = self._return_keys.pop(seq, None)
            if key is not None:
                del self._return_seqs[key]
        return self._unconfirmed.pop(seq, None)

    def _on_server_cancel(self, frame: Basic.Cancel) -> None:
        consumer = self._consumers.pop(cast(str, frame.consumer_tag), None)
        if not frame.nowait:
            self._send(frames.method_frame(self.id, Basic.CancelOk(consumer_tag=frame.consumer_tag)))
        log.info("the broker cancelled consumer %r on channel %d", frame.consumer_tag, self.id)
        if consumer is not None and consumer.on_cancel is not None:
            try:
                consumer.on_cancel(cast(str, frame.consumer_tag))
            except Exception:
                log.exception("cancel callback %r failed", consumer.on_cancel)

    def _on_flow(self, frame: commands.Channel.Flow) -> None:
        self._send(frames.method_frame(self.id, commands.Channel.FlowOk(frame.active)))

    def _on_close_ok(self, frame: commands.Channel.CloseOk) -> None:
        self.connection.forget_channel(self.id)  # the broker is done with the number, whoever still waits
        if self._rpc_waiter is not None:
            self._rpc_waiter.set(frame)

    def _on_server_close(self, frame: commands.Channel.Close) -> None:
        self._send(frames.method_frame(self.id, commands.Channel.CloseOk()))
        self.connection.forget_channel(self.id)
        self.fail(channel_error(cast(int, frame.reply_code), str(frame.reply_text)))

    # --- closing -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._error is None

    def close(self) -> None:
        """Close the channel (a no-op if it is already closed)."""
        if self._error is not None:
            return
        self.flush_acks()
        try:  # the broker's CloseOk frees the channel's number (_on_close_ok), even if this wait is cut short
            self._rpc(commands.Channel.Close(200, "Normal shutdown", 0, 0), commands.Channel.CloseOk)
        except AMQPError:  # the channel or its connection ended meanwhile
            self.connection.forget_channel(self.id)
            raise
        finally:
            self.fail(ChannelClosed(200, "closed by the client"), clean=True)

    def add_close_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(error)`` when the channel ends; ``error`` is None when we closed it."""
        self._close_callbacks.append(callback)

    def fail(self, error: BaseException, clean: bool = False) -> None:
        """End the channel: its waiter and unconfirmed publishes get ``error``. Called on any close."""
        if self._error is not None:
            return
        self._error = error
        self._acks.discard()
        if self._rpc_waiter is not None:
            self._rpc_waiter.set_exception(error)
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._return_seqs.clear()
        self._return_keys.clear()
        for confirmation in unconfirmed.values():
            confirmation.settle(error)
        for callback in self._close_callbacks:
            try:
                callback(None if clean else error)
            except Exception:
                log.exception("channel close callback %r failed", callback)

    def _raise_if_closed(self) -> None:
        if self._error is not None:
            raise self._error

    def __repr__(self) -> str:
        return f"<Channel {self.id} {'open' if self.is_open else 'closed'}>"


def _with_header(properties: Properties, name: str, value: Any) -> Properties:
    """A copy of ``properties`` with one more header."""
    return replaced(properties, headers={**(properties.headers or {}), name: value})
