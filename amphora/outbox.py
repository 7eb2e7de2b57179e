"""Outbox: every outgoing message waits here until the broker confirms it.

A message is published at once when its link is up and fewer than ``window`` messages await their confirm;
otherwise it queues, and a pump greenlet publishes it when the link is up and the window has room. If the
connection is lost before the confirm, the message stays: after the reconnect every message not published
on the new connection is published again, in order, before any new one.

A nacked message is published again after a short pause, once the link set up again. A returned
(unroutable) one leaves with that error. One the broker refuses by closing the channel (no write
permission, no such exchange, over its ``max_message_size``) or the connection (a frame error: see
:meth:`Outbox.check` for what is refused before that) is found by publishing one at a time after the
refusal, and leaves with that error when the broker refuses it a second time. Meanwhile the link publishes
on a channel of its own (:meth:`Link.isolate <amphora.link.Link.isolate>`), not on the main channel it
shares with other links: the refusals it probes for close no channel of theirs, and their messages never
pass for the refused one. A full outbox (``limit`` messages) makes ``publish`` wait (backpressure), or
raise :class:`OutboxFull` if asked.

The bookkeeping and every decision above are :class:`amphora.outbox_state.OutboxState`'s; this module is its
gevent driver: the events publishers and flushers wait on, the pump greenlet, the timer of the reconnect
after a nack, and the publishing through the link.
"""

from __future__ import annotations

import logging
import struct

import gevent
from gevent.event import Event

from .amqp import Channel, Confirmation, Connection, Properties
from .amqp.errors import AMQPError
from .amqp.frames import check_publishable
from .exceptions import OutboxFull
from .link import Link
from .outbox_state import DoneCallback, Envelope, OutboxState, Verdict

log = logging.getLogger(__name__)

NACK_BACKOFF = 0.2
"""Seconds before a link whose broker nacked a message reconnects to publish it again."""


class Outbox:
    """Holds messages until confirmed and publishes them through a :class:`Link` with confirms on."""

    def __init__(
        self, link: Link, limit: int = 100_000, block: bool = True, window: int = 1000, patience: int | None = None
    ) -> None:
        self._link = link
        self.block = block
        self._state = OutboxState(limit, window, patience)
        self._pump_wakeup = Event()
        self._pump: gevent.Greenlet | None = None
        self._has_space = Event()
        self._has_space.set()
        self._empty = Event()
        self._empty.set()
        self._wants_every_frame: Connection | None = None  # where it asked for its confirms at once, if it did
        link.on_ready(self._replay)

    def __len__(self) -> int:
        return len(self._state)

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
        :data:`~amphora.outbox_state.QUIET_BODY_LIMIT`, await their confirms, the confirms may be read up to
        :data:`amphora.amqp.quiet.MAX_DELAY` late, in batches."""
        state = self._state
        while state.full:
            if not self.block:
                raise OutboxFull(f"the outbox holds {state.limit} unconfirmed messages")
            self._has_space.clear()
            self._has_space.wait()
        envelope = state.envelope(exchange, routing_key, body, properties, mandatory, on_done, quiet)
        self._empty.clear()
        if state.add(envelope, self._link.generation if self._link.ready.is_set() else None):
            self._send(envelope)
        else:
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
        self._state.flushing += 1
        connection = self._link.connection
        if connection is not None:
            self._want_every_frame(connection)
        try:
            return self._empty.wait(timeout)
        finally:
            self._state.flushing -= 1
            self._may_wait_again()

    def _wake_pump(self) -> None:
        self._pump_wakeup.set()
        if self._pump is None or self._pump.dead:
            self._pump = gevent.spawn(self._run_pump)

    def _run_pump(self) -> None:
        """Publish queued messages whenever the link is up and the window has room."""
        state, link = self._state, self._link
        while True:
            self._pump_wakeup.wait()
            self._pump_wakeup.clear()
            while state.can_send(link.generation):
                link.ready.wait()
                envelope = state.next_unsent(link.generation)
                if envelope is not None:
                    self._send(envelope)

    def _send(self, envelope: Envelope) -> None:
        channel = self._link.channel
        generation = self._link.generation
        self._state.sending(envelope, generation)
        try:
            assert channel is not None
            confirmation = channel.basic_publish(
                envelope.body, envelope.exchange, envelope.routing_key, envelope.properties, envelope.mandatory
            )
        except AMQPError as exc:  # the connection just died: the replay after reconnecting sends it
            log.debug("publish deferred until reconnect: %s", exc)
            return
        except (TypeError, ValueError, OverflowError, struct.error) as exc:  # it can never be encoded
            self._state.unsendable(envelope)
            self._finish(envelope, exc)
            return
        assert confirmation is not None, "the outbox's link must have publisher confirms on"
        confirmation.add_done_callback(lambda c: self._on_confirmation(envelope, generation, c))
        if self._state.confirms_may_wait():
            if self._wants_every_frame is not None:
                self.stop_waiting()
            channel.connection.hold_reads(self)
        else:
            self._want_every_frame(channel.connection)

    def _on_confirmation(self, envelope: Envelope, generation: int, confirmation: Confirmation) -> None:
        error = confirmation.exception
        verdict = self._state.confirmed(envelope, generation, self._link.generation, error)
        if verdict is Verdict.IGNORE:
            return
        if verdict is Verdict.FINISH:
            self._finish(envelope, error)
        elif verdict is Verdict.REFUSED:
            log.warning("the broker refuses a message to %r: %s", envelope.exchange, error)
            self._finish(envelope, error)
        elif verdict is Verdict.RECONNECT:
            log.warning("broker nacked a message to %r; publishing it again after reconnecting", envelope.exchange)
            gevent.spawn_later(NACK_BACKOFF, self._reconnect_after_nack, generation)
        self._link.isolate(self._state.careful)
        if self._wants_every_frame is not None:
            self._may_wait_again()
        if self._state.unsent:
            self._wake_pump()

    def _want_every_frame(self, connection: Connection) -> None:
        """Have the confirms read at once: nobody sharing ``connection`` holds them back meanwhile."""
        if self._wants_every_frame is not connection:
            self.stop_waiting()  # on a connection the link left, which others may share
        self._wants_every_frame = connection
        connection.release_reads(self)

    def _may_wait_again(self) -> None:
        """Once few confirms are awaited again, let others on the connection hold reads again."""
        if self._state.confirms_may_wait():
            self.stop_waiting()

    def stop_waiting(self) -> None:
        """No longer ask the connection (which others may share) to read every frame at once for this outbox:
        few confirms are awaited, it left the connection, or its link stopped (the confirms of what it holds
        come after the next start)."""
        if self._wants_every_frame is not None:
            self._wants_every_frame.reads_may_wait(self)
            self._wants_every_frame = None

    def _reconnect_after_nack(self, generation: int) -> None:
        """Reconnect if still on the connection ``generation`` that nacked. If the link reconnected meanwhile
        (or is reconnecting: not ready), the replay sends the nacked messages again, and a nack on the new
        connection asks for a reconnect of its own."""
        try:
            if self._link.generation == generation and self._link.ready.is_set():
                self._link.reset()
        finally:
            self._state.nack_reconnect_over(generation)

    def _finish(self, envelope: Envelope, error: BaseException | None) -> None:
        state = self._state
        if not state.remove(envelope):
            return
        if not state.entries:
            self._empty.set()
        if not state.full:
            self._has_space.set()
        if envelope.on_done is not None:
            try:
                envelope.on_done(error)
            except Exception:
                log.exception("outbox callback %r failed", envelope.on_done)

    def _replay(self, channel: Channel) -> None:
        """On a new connection: queue, in order, every message not yet published on it."""
        count = self._state.replay()
        if count:
            log.info("publishing %d unconfirmed messages again", count)
            self._wake_pump()
