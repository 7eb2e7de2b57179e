"""Outbox: every outgoing message waits here until the broker confirms it.

A message is published at once when its link is up and fewer than ``window`` messages await their confirm;
otherwise it queues, and a pump greenlet publishes it when the link is up and the window has room. If the
connection is lost before the confirm, the message stays: after the reconnect every message not published
on the new connection is published again, in order, before any new one.

A nacked message is published again after a short pause, on a new connection. A returned (unroutable) one
leaves with that error. One the broker refuses by closing the channel (no write permission, no such
exchange, over its ``max_message_size``) or the connection (a frame error: see :meth:`Outbox.check` for what
is refused before that) is found by publishing one at a time after the refusal, and leaves with that error
when the broker refuses it a second time. A full outbox (``limit`` messages) makes ``publish`` wait
(backpressure), or raise :class:`OutboxFull` if asked.
"""

from __future__ import annotations

import collections
import itertools
import logging
import struct
from collections.abc import Callable

import gevent
from gevent.event import Event

from .amqp import Channel, Confirmation, Properties
from .amqp.errors import AMQPError, ChannelClosed, ConnectionClosed, MessageNacked, MessageReturned
from .amqp.frames import check_publishable
from .exceptions import OutboxFull
from .link import PERMANENT_CLOSE_CODES, Link

log = logging.getLogger(__name__)

NACK_BACKOFF = 0.2
"""Seconds before a link whose broker nacked a message reconnects to publish it again."""
QUIET_BODY_LIMIT = 4096
"""Bytes of the largest body whose confirm may be read late: a larger one would stay in memory longer for a
wake-up that costs little next to its own handling."""
DoneCallback = Callable[[BaseException | None], None]


class Envelope:
    """One message in the outbox."""

    __slots__ = (
        "body",
        "exchange",
        "generation",
        "key",
        "mandatory",
        "on_done",
        "properties",
        "quiet",
        "routing_key",
    )

    def __init__(
        self,
        key: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool,
        on_done: DoneCallback | None,
        quiet: bool = False,
    ) -> None:
        self.key = key
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.on_done = on_done
        self.quiet = quiet  # nobody waits for its confirm: it may be read late (amphora.amqp.quiet)
        self.generation = -1  # the link generation it was last published on


class Outbox:
    """Holds messages until confirmed and publishes them through a :class:`Link` with confirms on."""

    def __init__(
        self, link: Link, limit: int = 100_000, block: bool = True, window: int = 1000, patience: int | None = None
    ) -> None:
        self._link = link
        self.limit = limit
        self.block = block
        self.window = window
        self.patience = min(limit, window) // 2 if patience is None else patience
        self._entries: dict[int, Envelope] = {}
        self._unsent: collections.deque[Envelope] = collections.deque()
        self._in_flight = 0  # published on the current connection, awaiting their confirms
        self._prompt_in_flight = 0  # of those, the ones whose confirm somebody waits for
        self._flushing = 0  # callers of flush()
        self._careful_from: int | None = None  # from this link generation on, one message in flight at a time
        self._nack_reset_for: int | None = None  # the link generation a reconnect after a nack is due for
        self._pump_wakeup = Event()
        self._pump: gevent.Greenlet | None = None
        self._keys = itertools.count()
        self._has_space = Event()
        self._has_space.set()
        self._empty = Event()
        self._empty.set()
        link.on_ready(self._replay)

    def __len__(self) -> int:
        return len(self._entries)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
        on_done: DoneCallback | None = None,
        quiet: bool = False,
    ) -> Envelope:
        """Add a message; ``on_done(error)`` runs once it is confirmed (None), returned (MessageReturned),
        or found impossible to encode (TypeError, ValueError...).

        ``quiet``: nobody waits for ``on_done`` (a call's request, whose reply comes anyway; a reply, whose
        request is acknowledged after it). While up to ``patience`` messages, all quiet and none larger than
        ``QUIET_BODY_LIMIT``, await their confirms, the confirms may be read up to
        :data:`amphora.amqp.quiet.MAX_DELAY` late, in batches."""
        while len(self._entries) >= self.limit:
            if not self.block:
                raise OutboxFull(f"the outbox holds {self.limit} unconfirmed messages")
            self._has_space.clear()
            self._has_space.wait()
        quiet = quiet and len(body) <= QUIET_BODY_LIMIT
        envelope = Envelope(next(self._keys), exchange, routing_key, body, properties, mandatory, on_done, quiet)
        self._entries[envelope.key] = envelope
        self._empty.clear()
        if not self._unsent and self._in_flight < self._window() and self._link.ready.is_set():
            self._send(envelope)
        else:
            self._unsent.append(envelope)
            self._wake_pump()
        return envelope

    def check(self, routing_key: str, properties: Properties) -> None:
        """Raise ValueError for a message the broker could never take (see
        :func:`amphora.amqp.frames.check_publishable`), judged by the link's frame size: the negotiated one,
        or before connecting the configured one (a broker with a smaller one fails the message when it is
        published, before any of it is sent)."""
        check_publishable(routing_key, properties, self._link.frame_max)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message is confirmed; False if ``timeout`` passed first."""
        self._flushing += 1
        if self._link.connection is not None:
            self._link.connection.reads.release()
        try:
            return self._empty.wait(timeout)
        finally:
            self._flushing -= 1

    def _window(self) -> int:
        careful = self._careful_from is not None and self._link.generation >= self._careful_from
        return 1 if careful else self.window

    def _wake_pump(self) -> None:
        self._pump_wakeup.set()
        if self._pump is None or self._pump.dead:
            self._pump = gevent.spawn(self._run_pump)

    def _run_pump(self) -> None:
        """Publish queued messages whenever the link is up and the window has room."""
        while True:
            self._pump_wakeup.wait()
            self._pump_wakeup.clear()
            while self._unsent and self._in_flight < self._window():
                self._link.ready.wait()
                envelope = self._unsent.popleft()
                if envelope.key in self._entries and envelope.generation != self._link.generation:
                    self._send(envelope)

    def _send(self, envelope: Envelope) -> None:
        channel = self._link.channel
        generation = envelope.generation = self._link.generation
        self._count_in_flight(envelope, 1)
        try:
            assert channel is not None
            confirmation = channel.basic_publish(
                envelope.body, envelope.exchange, envelope.routing_key, envelope.properties, envelope.mandatory
            )
        except AMQPError as exc:  # the connection just died: the replay after reconnecting sends it
            log.debug("publish deferred until reconnect: %s", exc)
            return
        except (TypeError, ValueError, OverflowError, struct.error) as exc:  # it can never be encoded
            self._count_in_flight(envelope, -1)
            self._finish(envelope, exc)
            return
        assert confirmation is not None, "the outbox's link must have publisher confirms on"
        confirmation.add_done_callback(lambda c: self._on_confirmation(envelope, generation, c))
        reads = channel.connection.reads
        if self._in_flight <= self.patience and not self._prompt_in_flight and not self._flushing:
            reads.hold()
        else:
            reads.release()

    def _count_in_flight(self, envelope: Envelope, change: int) -> None:
        self._in_flight += change
        if not envelope.quiet:
            self._prompt_in_flight += change

    def _on_confirmation(self, envelope: Envelope, generation: int, confirmation: Confirmation) -> None:
        if generation != self._link.generation:
            return  # a confirmation of the lost connection: the replay published the message again
        self._count_in_flight(envelope, -1)
        error = confirmation.exception
        if error is None or isinstance(error, MessageReturned):
            self._finish(envelope, error)
            if self._careful_from is not None and not self._unsent and not self._in_flight:
                self._careful_from = None  # every message that shared the refusal is through
        elif isinstance(error, MessageNacked):
            # A channel may go on nacking (RabbitMQ 3.10 does, for a quorum queue that elected a new leader
            # while the channel published to it): publish it again later, on a new connection. One reconnect
            # per connection: a reconnect still due for an older one does nothing for this one.
            if self._nack_reset_for != generation:
                log.warning("broker nacked a message to %r; publishing it again after reconnecting", envelope.exchange)
                self._nack_reset_for = generation
                gevent.spawn_later(NACK_BACKOFF, self._reset_after_nack, generation)
        elif _refusal(error):
            # The broker refused a publish (no write permission, no such exchange, too large) and closed the
            # channel, or the connection (a frame it cannot take): every message in flight got the error. To
            # find the refused one, the next connections publish one message at a time; the one in flight
            # when it happens again is it, and fails.
            if self._careful_from is not None and generation >= self._careful_from:
                log.warning("the broker refuses a message to %r: %s", envelope.exchange, error)
                self._finish(envelope, error)
            elif self._careful_from is None:
                self._careful_from = generation + 1
        # on a lost connection the envelope stays; the replay after reconnecting sends it
        if self._unsent:
            self._wake_pump()

    def _reset_after_nack(self, generation: int) -> None:
        """Reconnect if still on the connection ``generation`` that nacked. If the link reconnected meanwhile
        (or is reconnecting: not ready), the replay sends the nacked messages again, and a nack on the new
        connection asks for a reconnect of its own."""
        try:
            if self._link.generation == generation and self._link.ready.is_set():
                self._link.reset()
        finally:
            if self._nack_reset_for == generation:
                self._nack_reset_for = None

    def _finish(self, envelope: Envelope, error: BaseException | None) -> None:
        if self._entries.pop(envelope.key, None) is None:
            return
        if not self._entries:
            self._empty.set()
        if len(self._entries) < self.limit:
            self._has_space.set()
        if envelope.on_done is not None:
            try:
                envelope.on_done(error)
            except Exception:
                log.exception("outbox callback %r failed", envelope.on_done)

    def _replay(self, channel: Channel) -> None:
        """On a new connection: queue, in order, every message not yet published on it."""
        self._in_flight = self._prompt_in_flight = 0
        self._unsent = collections.deque(self._entries.values())
        if self._unsent:
            log.info("publishing %d unconfirmed messages again", len(self._unsent))
            self._wake_pump()


def _refusal(error: BaseException | None) -> bool:
    """Whether the broker closed the channel, or the connection for a reason reconnecting does not fix (a
    frame error, a syntax error...), while a message was in flight: that message may be the cause."""
    return isinstance(error, ChannelClosed) or (
        isinstance(error, ConnectionClosed) and error.code in PERMANENT_CLOSE_CODES
    )
