"""QueueReceiver: a server taking requests from one per-key request queue, for a number of calls or a time.

Made by :meth:`amphora.AmqpRpcServer.receive_from_queue`. Its consumer lives on the server's consuming link,
so it is restored after a reconnect. Once it has had its calls, it settles nothing more with the broker until
the broker confirmed the cancel of its consumer: an ack or a reject would open its prefetch window, and the
broker would send it the queue's next request, only to get it back (again and again while the cancel waits).
The requests the broker sent before the cancel go back to the queue for whoever consumes it next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
from gevent.event import Event

from .amqp import Message
from .amqp.errors import AMQPError
from .link import Link, settle_quietly

log = logging.getLogger(__name__)

Dispatch = Callable[[Message], None]
"""``dispatch(message)``: hands a request to the server, which settles it (ack or reject) once done with it."""


class _Taken(Message):
    """A delivery the receiver handed to the server: its receiver sees when (and delays how) it is settled."""

    __slots__ = ("_receiver",)
    _receiver: QueueReceiver

    def ack(self, multiple: bool = False) -> None:
        self._receiver._settle(self, lambda: Message.ack(self, multiple))

    def nack(self, requeue: bool = True, multiple: bool = False) -> None:
        self._receiver._settle(self, lambda: Message.nack(self, requeue, multiple))

    def reject(self, requeue: bool = True) -> None:
        self._receiver._settle(self, lambda: Message.reject(self, requeue))


class QueueReceiver:
    """Takes requests from ``queue`` until ``max_calls`` were taken, ``timeout`` passed, or :meth:`stop`.

    ``calls`` counts distinct requests taken (a redelivery of one already taken does not count again).
    """

    def __init__(
        self,
        link: Link,
        queue: str,
        dispatch: Dispatch,
        max_calls: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if max_calls is not None and max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        self.queue = queue
        self.max_calls = max_calls
        self.calls = 0
        self.timed_out = False
        self._link = link
        self._dispatch = dispatch
        self._taken: set[str] = set()
        self._unsettled: set[_Taken] = set()  # deliveries handed to the server and not yet acked or rejected
        self._settled = Event()  # set while none is unsettled
        self._settled.set()
        self._held: list[Callable[[], None]] = []  # settlements waiting for the cancel of the consumer
        self._finished = False
        self._cancelled = False
        self._done = Event()
        self._timer = gevent.spawn_later(timeout, self._time_out) if timeout is not None else None
        self._consumer_id: int | None = None
        consumer_id = link.add_consumer(
            queue, self._on_message, on_cancel=self._on_cancel, prefetch=max_calls or 0, optional=True
        )
        self._consumer_id = consumer_id
        if self._finished:  # it had its calls while the broker was still confirming the consumer
            gevent.spawn(self._end)

    @property
    def done(self) -> bool:
        """True once it takes no more requests, and the requests it took were handled and acknowledged (the
        acks handed to the connection's socket)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done; False if ``timeout`` passed first.

        Raises :class:`gevent.Timeout` if the receiver's own timeout ended it before ``max_calls``.
        """
        if not self._done.wait(timeout):
            return False
        if self.timed_out and self.max_calls is not None and self.calls < self.max_calls:
            raise gevent.Timeout(None, f"{self.queue}: {self.calls} of {self.max_calls} calls before the timeout")
        return True

    def stop(self) -> None:
        """Take no more requests; those being handled finish."""
        self._finish()

    # --- reader greenlet ------------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        request_id = message.properties.message_id
        fresh = not request_id or request_id not in self._taken
        if self._finished or (fresh and self._reached_max()):
            self._after_cancel(lambda: settle_quietly(message.reject, True))
            return
        if fresh:
            self.calls += 1
            if request_id:
                self._taken.add(request_id)
        taken = _Taken(
            message.channel,
            message.body,
            message.properties,
            message.exchange,
            message.routing_key,
            message.delivery_tag,
            message.redelivered,
            message.consumer_tag,
        )
        taken._receiver = self
        self._unsettled.add(taken)
        self._settled.clear()
        if self._reached_max():
            self._finish()
        self._dispatch(taken)

    def _on_cancel(self, consumer_tag: str) -> None:
        log.info("request queue %s was deleted: its receiver ends", self.queue)
        self._finish()

    def _settle(self, delivery: _Taken, settle: Callable[[], None]) -> None:
        """The server acks or rejects ``delivery``: now, or once the consumer is cancelled."""

        def settle_counted() -> None:
            try:
                settle()
            finally:
                self._unsettled.discard(delivery)
                if not self._unsettled:
                    self._settled.set()

        self._after_cancel(settle_counted)

    def _after_cancel(self, settle: Callable[[], None]) -> None:
        """Settle a delivery now, unless the receiver finished and the broker has not confirmed its cancel:
        then only once it has (settling would open the prefetch window to a consumer that takes nothing)."""
        if self._finished and not self._cancelled:
            self._held.append(settle)
        else:
            settle()

    # --- ending ---------------------------------------------------------------------------------

    def _reached_max(self) -> bool:
        return self.max_calls is not None and self.calls >= self.max_calls

    def _time_out(self) -> None:
        self.timed_out = True
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timer is not None and self._timer is not gevent.getcurrent():
            self._timer.kill(block=False)
        if self._consumer_id is not None:
            gevent.spawn(self._end)  # it waits for the broker: not here

    def _end(self) -> None:
        """Cancel the consumer, then settle what waited for that; once every request taken is settled, hand
        the acks to the socket and be done."""
        try:
            assert self._consumer_id is not None
            self._link.remove_consumer(self._consumer_id)
        finally:
            self._cancelled = True
            held, self._held = self._held, []
            for settle in held:
                settle_quietly(settle)
        self._settled.wait()
        channel = self._link.channel
        if channel is not None and channel.is_open:
            try:
                channel.flush_acks()
                channel.connection.drain()
            except AMQPError as exc:  # the connection is gone: the broker requeues what was not acked
                log.debug("%s: acks not sent: %s", self.queue, exc)
        self._done.set()

    def __repr__(self) -> str:
        state = "done" if self.done else "receiving"
        return f"<QueueReceiver {self.queue} {self.calls}/{self.max_calls or '-'} calls {state}>"
