"""What a consumer receives (:class:`Message`) and what a confirmed publish returns (:class:`Confirmation`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gevent.event import Event
from pamqp.commands import Basic

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger(__name__)

Properties = Basic.Properties


class Message:
    """A message delivered to a consumer (or returned by the broker, then with ``delivery_tag`` None)."""

    __slots__ = (
        "body",
        "channel",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(
        self,
        channel: Channel,
        body: bytes,
        properties: Properties,
        exchange: str,
        routing_key: str,
        delivery_tag: int | None = None,
        redelivered: bool = False,
        consumer_tag: str | None = None,
    ) -> None:
        self.channel = channel
        self.body = body
        self.properties = properties
        self.exchange = exchange
        self.routing_key = routing_key
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.consumer_tag = consumer_tag

    def ack(self, multiple: bool = False) -> None:
        """Acknowledge this delivery (and, with ``multiple``, every earlier one on the channel)."""
        self.channel.basic_ack(self._tag(), multiple)

    def nack(self, requeue: bool = True, multiple: bool = False) -> None:
        """Reject this delivery (and, with ``multiple``, every earlier unacked one)."""
        self.channel.basic_nack(self._tag(), multiple, requeue)

    def reject(self, requeue: bool = True) -> None:
        """Reject this delivery; without ``requeue`` it is dead-lettered or dropped."""
        self.channel.basic_reject(self._tag(), requeue)

    def _tag(self) -> int:
        if self.delivery_tag is None:
            raise ValueError("a returned message has no delivery tag to acknowledge")
        return self.delivery_tag

    def __repr__(self) -> str:
        return (
            f"<Message tag={self.delivery_tag} exchange={self.exchange!r} "
            f"routing_key={self.routing_key!r} {len(self.body)} bytes>"
        )


class Confirmation:
    """The broker's answer to one confirmed publish: wait for it, or be called back when it comes."""

    __slots__ = ("_callbacks", "_event", "done", "exception")

    def __init__(self) -> None:
        self.done = False
        self.exception: BaseException | None = None
        self._callbacks: list[Callable[[Confirmation], None]] | None = None
        self._event: Event | None = None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the broker confirmed the message; raise why it did not.

        Raises MessageNacked, MessageReturned, ConnectionLost or ChannelClosed, or TimeoutError when
        ``timeout`` seconds pass first.
        """
        if not self.done:
            if self._event is None:
                self._event = Event()
            if not self._event.wait(timeout):
                raise TimeoutError(f"no publisher confirm within {timeout} s")
        if self.exception is not None:
            raise self.exception

    def add_done_callback(self, callback: Callable[[Confirmation], None]) -> None:
        """Call ``callback(self)`` once settled (at once if it already is); it runs in the reader greenlet."""
        if self.done:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def settle(self, exception: BaseException | None) -> None:
        """Record the outcome (None means acked) and wake whoever waits. Called by the channel."""
        if self.done:
            return
        self.done = True
        self.exception = exception
        if self._event is not None:
            self._event.set()
        if self._callbacks:
            for callback in self._callbacks:
                try:
                    callback(self)
                except Exception:
                    log.exception("publisher confirm callback %r failed", callback)
            self._callbacks = None
