"""AckGatherer: a channel's acknowledgements of deliveries, gathered to be sent as few frames as possible.

Fewer ack frames save the broker and both sides a write and a read per message. Gathered acks go out as one
``multiple`` ack for the leading run of outstanding tags they cover, and single acks for the others.

Each outstanding delivery is known with its consumer, so that the deliveries of one consumer, whose owner
goes away while the channel stays open for other consumers, can be handed back (:meth:`AckGatherer.leftovers`);
a settle of a delivery no longer outstanding is then dropped, since the broker would close the channel for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent

from . import frames

ACK_DELAY = 0.01
"""Seconds an ack may wait to be sent with others."""
ACK_BATCH_UNLIMITED = 1000
"""Acks gathered before sending them, on a channel whose prefetch is unlimited."""


class AckGatherer:
    """The deliveries of one channel that await our ack, and the acks gathered but not sent yet.

    Acks go out at the end of the loop iteration once ``batch`` of them gathered (half the prefetch), else at
    most ``ACK_DELAY`` seconds later, so that a consumer never waits for its own acks.
    """

    def __init__(self, channel_id: int, send: Callable[[bytes], None]) -> None:
        self._channel_id = channel_id
        self._send = send
        self.unacked: dict[int, str] = {}  # delivery tags awaiting our ack, in delivery order: their consumer tags
        self.gathered: set[int] = set()  # acks not sent yet
        self._batch = 1
        self._flush: Any = None  # the loop callback or timer that sends them
        self._flush_soon = False  # it is the callback at the end of this loop iteration

    def set_prefetch(self, prefetch_count: int, shared: bool) -> None:
        """Send acks once half of ``prefetch_count`` gathered (0: unlimited). With several consumers on the
        channel (``shared``), the smallest prefetch decides, so that none of them waits for acks."""
        batch = max(1, prefetch_count // 2) if prefetch_count else ACK_BATCH_UNLIMITED
        self._batch = min(self._batch, batch) if shared else batch

    def delivered(self, delivery_tag: int, consumer_tag: str = "") -> None:
        """A delivery that needs an ack arrived, for ``consumer_tag``."""
        self.unacked[delivery_tag] = consumer_tag

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge one delivery (gathered; dropped if no longer outstanding), or every one up to it with
        ``multiple`` (sent at once)."""
        if multiple:
            self.flush()
            self._forget_through(delivery_tag)
            self._send(frames.ack_frame(self._channel_id, delivery_tag, True))
            return
        if delivery_tag not in self.unacked:
            return
        gathered = self.gathered
        gathered.add(delivery_tag)
        if len(gathered) >= self._batch:
            if not self._flush_soon:  # none yet, or only the timer
                self._stop_flush()
                self._flush = gevent.get_hub().loop.run_callback(self.flush)
                self._flush_soon = True
        elif self._flush is None:
            self._flush = gevent.get_hub().loop.timer(ACK_DELAY)
            self._flush.start(self.flush)

    def settled(self, delivery_tag: int, multiple: bool) -> bool:
        """Before a nack or reject of the delivery (every one up to it with ``multiple``) is sent: the acks
        gathered so far go first, and the settled tags are no longer outstanding. False: the delivery was
        no longer outstanding, and nothing is to be sent."""
        self.flush()
        if multiple:
            self._forget_through(delivery_tag)
            return True
        return self.unacked.pop(delivery_tag, None) is not None

    def leftovers(self, consumer_prefix: str) -> list[int]:
        """The outstanding deliveries of the consumers whose tags start with ``consumer_prefix``, once the
        gathered acks went out: the caller requeues them."""
        self.flush()
        return [tag for tag, consumer in self.unacked.items() if consumer.startswith(consumer_prefix)]

    def flush(self) -> None:
        """Send the gathered acks now."""
        self._stop_flush()
        gathered, self.gathered = self.gathered, set()
        if not gathered:
            return
        unacked = self.unacked
        last_of_run = 0
        for tag in unacked:
            if tag not in gathered:
                break
            last_of_run = tag
        data = []
        if last_of_run:
            self._forget_through(last_of_run)
            data.append(frames.ack_frame(self._channel_id, last_of_run, True))
        for tag in sorted(gathered):
            if tag > last_of_run:
                unacked.pop(tag, None)
                data.append(frames.ack_frame(self._channel_id, tag, False))
        self._send(b"".join(data))

    def discard(self) -> None:
        """The channel ended: the broker requeues every unacknowledged delivery, nothing is sent."""
        self._stop_flush()
        self.gathered = set()
        self.unacked.clear()

    def _stop_flush(self) -> None:
        if self._flush is not None:
            self._flush.stop()
            self._flush = None
            self._flush_soon = False

    def _forget_through(self, delivery_tag: int) -> None:
        """Drop every outstanding tag up to ``delivery_tag`` (``0``: all), as a ``multiple`` settle does."""
        unacked = self.unacked
        while unacked:
            tag = next(iter(unacked))
            if delivery_tag and tag > delivery_tag:
                break
            del unacked[tag]
