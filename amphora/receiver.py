"""QueueReceiver: a server taking requests from one per-key request queue, for a number of calls or a time.

Made by :meth:`amphora.AmqpRpcServer.receive_from_queue`. Its consumer lives on the server's consuming link,
so it is restored after a reconnect; requests that arrive once it has had its calls (the broker may send
some before it sees the cancel) go back to the queue for whoever consumes it next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
from gevent.event import Event

from .amqp import Message
from .link import Link, settle_quietly

log = logging.getLogger(__name__)

Dispatch = Callable[[Message, Callable[[], None]], bool]
"""``dispatch(message, handled)``: True if the message went to a handler, which calls ``handled()`` when done."""


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
        self._handling = 0  # requests handed to the server and not yet handled
        self._finished = False
        self._done = Event()
        self._timer = gevent.spawn_later(timeout, self._time_out) if timeout is not None else None
        self._consumer_id: int | None = None
        consumer_id = link.add_consumer(
            queue, self._on_message, on_cancel=self._on_cancel, prefetch=max_calls or 0, optional=True
        )
        self._consumer_id = consumer_id
        if self._finished:  # it had its calls while the broker was still confirming the consumer
            self._remove_consumer()

    @property
    def done(self) -> bool:
        """True once it takes no more requests and the requests it took were handled."""
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
            settle_quietly(message.reject, True)
            return
        if fresh:
            self.calls += 1
            if request_id:
                self._taken.add(request_id)
        if self._dispatch(message, self._on_handled):
            self._handling += 1
        if self._reached_max():
            self._finish()

    def _on_cancel(self, consumer_tag: str) -> None:
        log.info("request queue %s was deleted: its receiver ends", self.queue)
        self._finish()

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
            self._remove_consumer()
        self._check_done()

    def _remove_consumer(self) -> None:
        gevent.spawn(self._link.remove_consumer, self._consumer_id)  # it waits for the broker: not here

    def _on_handled(self) -> None:
        self._handling -= 1
        self._check_done()

    def _check_done(self) -> None:
        if self._finished and not self._handling:
            self._done.set()

    def __repr__(self) -> str:
        state = "done" if self.done else "receiving"
        return f"<QueueReceiver {self.queue} {self.calls}/{self.max_calls or '-'} calls {state}>"
