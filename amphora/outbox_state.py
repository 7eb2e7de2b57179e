"""OutboxState: the outbox's bookkeeping without I/O. State in, decisions out.

It holds the messages in order, counts those awaiting their confirm on the current connection (the window),
says which to publish again after a reconnect and in which order, and what a confirm decides (leave, stay for
the replay, reconnect after a nack). After a refusal it goes careful: one message in flight at a time until
the refused one is found. It also says when the outbox is full and when the confirms may be read late.
:class:`amphora.outbox.Outbox` passes in the link's generation (a number per connection) and does the
publishing, waiting and timing. Nothing here depends on the time, so it needs no clock.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Callable

from .amqp import Properties
from .amqp.errors import ChannelClosed, ConnectionClosed, MessageNacked, MessageReturned
from .link import PERMANENT_CLOSE_CODES

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


class Verdict(enum.Enum):
    """What a confirm (or its failure) means for the message."""

    IGNORE = "a confirm from a lost connection: the replay published the message again"
    FINISH = "the message leaves: confirmed, or returned (unroutable)"
    REFUSED = "the message leaves with the broker's refusal, found in careful mode"
    RECONNECT = "nacked: reconnect after a pause (NACK_BACKOFF); the replay publishes it again"
    STAY = "it stays: the replay after the next reconnect publishes it again"


class OutboxState:
    """The messages of one outbox until they leave, and the decisions about them (see the module docstring).

    ``limit``: messages held at most; ``window``: messages awaiting their confirm at most; ``patience``:
    quiet messages in flight whose confirms may still be read late (default: half the smaller of the two).
    """

    def __init__(self, limit: int, window: int, patience: int | None = None) -> None:
        self.limit = limit
        self.window = window
        self.patience = min(limit, window) // 2 if patience is None else patience
        self.entries: dict[int, Envelope] = {}  # every message until it leaves, in order
        self.unsent: collections.deque[Envelope] = collections.deque()  # waiting for the pump, in order
        self.in_flight = 0  # published on the current connection, awaiting their confirms
        self.prompt_in_flight = 0  # of those, the ones whose confirm somebody waits for
        self.flushing = 0  # callers waiting for every message to leave
        self._careful_from: int | None = None  # from this link generation on, one message in flight at a time
        self._nack_reconnect_for: int | None = None  # the link generation a reconnect after a nack is due for
        self._keys = itertools.count()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.limit

    def envelope(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool,
        on_done: DoneCallback | None,
        quiet: bool,
    ) -> Envelope:
        """A new message, not added yet; ``quiet`` only up to ``QUIET_BODY_LIMIT`` bytes."""
        quiet = quiet and len(body) <= QUIET_BODY_LIMIT
        return Envelope(next(self._keys), exchange, routing_key, body, properties, mandatory, on_done, quiet)

    def add(self, envelope: Envelope, ready_generation: int | None) -> bool:
        """Hold a new message. True: publish it now (the link is ready at ``ready_generation``, no message
        waits before it and the window has room); False: it waits its turn for the pump."""
        self.entries[envelope.key] = envelope
        if not self.unsent and ready_generation is not None and self.in_flight < self.window_for(ready_generation):
            return True
        self.unsent.append(envelope)
        return False

    @property
    def careful(self) -> bool:
        """Whether the messages published after a refusal go one at a time, to find the refused one."""
        return self._careful_from is not None

    def window_for(self, generation: int) -> int:
        """Messages that may await their confirm on connection ``generation``: 1 in careful mode."""
        careful = self._careful_from is not None and generation >= self._careful_from
        return 1 if careful else self.window

    def can_send(self, generation: int) -> bool:
        """Whether messages wait for the pump and the window on connection ``generation`` has room."""
        return bool(self.unsent) and self.in_flight < self.window_for(generation)

    def next_unsent(self, generation: int) -> Envelope | None:
        """Take the next waiting message off the queue; it, to publish on connection ``generation``, or None if
        there is none, or it left meanwhile, or it was already published on that connection."""
        if not self.unsent:
            return None
        envelope = self.unsent.popleft()
        if envelope.key in self.entries and envelope.generation != generation:
            return envelope
        return None

    def sending(self, envelope: Envelope, generation: int) -> None:
        """``envelope`` is being published on connection ``generation``: it is in flight."""
        envelope.generation = generation
        self._count_in_flight(envelope, 1)

    def unsendable(self, envelope: Envelope) -> None:
        """Publishing ``envelope`` failed before anything was sent (it cannot be encoded): not in flight."""
        self._count_in_flight(envelope, -1)

    def confirms_may_wait(self) -> bool:
        """After a publish: whether its confirm, and those before it, may be read late (few in flight, all
        quiet, nobody flushing)."""
        return self.in_flight <= self.patience and not self.prompt_in_flight and not self.flushing

    def confirmed(
        self, envelope: Envelope, generation: int, current_generation: int, error: BaseException | None
    ) -> Verdict:
        """The confirm of ``envelope``, published on connection ``generation``, came with ``error`` (None: acked)
        while the link is at ``current_generation``."""
        if generation != current_generation:
            return Verdict.IGNORE
        self._count_in_flight(envelope, -1)
        if error is None or isinstance(error, MessageReturned):
            if self._careful_from is not None and not self.unsent and not self.in_flight:
                self._careful_from = None  # every message that shared the refusal is through
            return Verdict.FINISH
        if isinstance(error, MessageNacked):
            # A channel may go on nacking (RabbitMQ 3.10 does, for a quorum queue that elected a new leader
            # while the channel published to it): publish it again later, on a new connection. One reconnect
            # per connection: a reconnect still due for an older one does nothing for this one.
            if self._nack_reconnect_for == generation:
                return Verdict.STAY
            self._nack_reconnect_for = generation
            return Verdict.RECONNECT
        if refusal(error):
            # The broker refused a publish (no write permission, no such exchange, too large) and closed the
            # channel, or the connection (a frame it cannot take): every message in flight got the error. To
            # find the refused one, the next connections publish one message at a time; the one in flight
            # when it happens again is it, and fails.
            if self._careful_from is None:
                self._careful_from = generation + 1
            elif generation >= self._careful_from:
                return Verdict.REFUSED
        return Verdict.STAY  # on a lost connection too: the replay after reconnecting sends it

    def nack_reconnect_over(self, generation: int) -> None:
        """The reconnect asked for after a nack on connection ``generation`` happened, or was not needed: a
        nack on a later connection asks for one of its own."""
        if self._nack_reconnect_for == generation:
            self._nack_reconnect_for = None

    def remove(self, envelope: Envelope) -> bool:
        """``envelope`` leaves the outbox; False if it had left already."""
        return self.entries.pop(envelope.key, None) is not None

    def replay(self) -> int:
        """A new connection: nothing is in flight on it, and every message held waits, in order, to be
        published on it. How many."""
        self.in_flight = self.prompt_in_flight = 0
        self.unsent = collections.deque(self.entries.values())
        return len(self.unsent)

    def _count_in_flight(self, envelope: Envelope, change: int) -> None:
        self.in_flight += change
        if not envelope.quiet:
            self.prompt_in_flight += change


def refusal(error: BaseException | None) -> bool:
    """Whether the broker closed the channel, or the connection for a reason reconnecting does not fix (a
    frame error, a syntax error...), while a message was in flight: that message may be the cause."""
    return isinstance(error, ChannelClosed) or (
        isinstance(error, ConnectionClosed) and error.code in PERMANENT_CLOSE_CODES
    )
