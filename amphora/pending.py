"""Calls waiting for replies: one reply (``call``/``defer``), or one from every server (``gather``), and the
registry that times them out with one timer for all (the bookkeeping of when: :mod:`amphora.deadlines`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.event import AsyncResult

from .amqp.errors import MessageReturned
from .deadlines import Deadlines
from .exceptions import BrokerUnavailable, NoResult, RequestExpired, RequestMayHaveRun, Unroutable
from .protocol import Death


def publish_error(error: BaseException, func_name: str) -> BaseException:
    """What a caller sees of a request the broker did not take: Unroutable for a returned one."""
    if isinstance(error, MessageReturned):
        return Unroutable(f"no queue for routing key {error.message.routing_key!r} of {func_name}")
    return error


def dead_letter_error(function: str, died: Death) -> NoResult:
    """What a caller sees of its request dead-lettered back unanswered.

    RabbitMQ keeps no trace of an earlier delivery in a dead-lettered copy (neither the redelivered flag nor,
    in 3.10, a quorum queue's delivery count), so a request it expired in the queue may have been delivered to
    a server that died in its handler, and was put back. Only a request a server rejected on its first delivery
    (servers drop redelivered ones instead) certainly never ran: RequestExpired. Anything else:
    RequestMayHaveRun."""
    if died.reason == "rejected" and not died.delivered_before:
        return RequestExpired(f"the call to {function} never ran: a server received it past its deadline")
    return RequestMayHaveRun(
        f"no server answered the call to {function} in time: the broker dead-lettered the request ({died.reason});"
        " it may have run on a server that took it and failed before answering (the broker does not tell)"
    )


def expiry_grace(timeout: float) -> float:
    """How long past its timeout a call waits for its request to come back expired before NoResult."""
    return min(1.0, 0.25 + 0.05 * timeout)  # a loaded broker may take a few hundred ms to dead-letter


class PendingCall:
    """A call waiting for its one reply; ``result`` is the AsyncResult its caller holds."""

    __slots__ = ("function", "lifetime", "registry", "request_id", "result", "timeout")

    def __init__(self, function: str, timeout: float | None) -> None:
        self.result = AsyncResult()
        self.function = function
        self.timeout = timeout
        # seconds after its start at which the call gives up (None: never)
        self.lifetime = timeout + expiry_grace(timeout) if timeout else None
        self.request_id = ""
        self.registry: PendingCalls | None = None

    def published(self, error: BaseException | None) -> None:
        """The outbox's verdict on the request: the call fails if the broker did not take it."""
        if error is not None and self.registry is not None and self.registry.pop(self.request_id) is not None:
            self.settle(error=publish_error(error, self.function))

    def add_reply(self, server: str, value: Any, error: BaseException | None) -> bool:
        """Take a server's reply; True once the call is complete."""
        self.settle(value, error)
        return True

    def expired(self, died: Death) -> bool:
        """The request came back dead-lettered; True once the call is complete."""
        self.settle(error=dead_letter_error(self.function, died))
        return True

    def time_out(self, no_broker: str | None = None) -> None:
        """The call's time is up; ``no_broker``: why no broker connection could be had, if none could."""
        message = f"no reply to {self.function} within {self.timeout} s"
        self.settle(error=NoResult(message) if no_broker is None else BrokerUnavailable(f"{message}: {no_broker}"))

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if error is None:
            self.result.set(value)
        else:
            self.result.set_exception(error)


class PendingGather(PendingCall):
    """A broadcast collecting every server's reply until its timeout, or until ``expect`` replies came.

    Its result maps each server's identity to its result, or to the exception it raised.
    """

    __slots__ = ("expect", "replies")

    def __init__(self, function: str, timeout: float, expect: int | None) -> None:
        super().__init__(function, timeout)
        self.lifetime = timeout  # no grace: what came by then is the answer
        self.expect = expect
        self.replies: dict[str, Any] = {}

    def add_reply(self, server: str, value: Any, error: BaseException | None) -> bool:
        self.replies[server] = value if error is None else error
        if self.expect is not None and len(self.replies) >= self.expect:
            self.settle(self.replies)
            return True
        return False

    def expired(self, died: Death) -> bool:
        return False  # a copy nobody took: the servers that did take theirs still answer

    def time_out(self, no_broker: str | None = None) -> None:
        self.settle(self.replies)


class PendingCalls:
    """The pending calls of a client by request id, timed out by a single timer that :class:`Deadlines`
    arms: a call times out ``call.lifetime`` seconds after it was added, unless settled before. The timer
    does not keep the hub running (``ref=False``).

    ``no_broker()`` says why the caller has no broker connection, if it cannot get one (else None): calls
    that time out meanwhile fail with :exc:`BrokerUnavailable` and that reason instead of :exc:`NoResult`.
    """

    def __init__(self, no_broker: Callable[[], str | None] = lambda: None) -> None:
        self._no_broker = no_broker
        self._calls: dict[str, PendingCall] = {}
        self._deadlines = Deadlines()
        self._timer: Any = None

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._calls

    def get(self, request_id: str) -> PendingCall | None:
        return self._calls.get(request_id)

    def add(self, request_id: str, call: PendingCall) -> None:
        """Register a call; it times out ``call.lifetime`` seconds from now, unless settled before."""
        self._calls[request_id] = call
        call.request_id, call.registry = request_id, self
        if call.lifetime is not None:
            wakeup = self._deadlines.add(request_id, call.lifetime, time.monotonic())
            if wakeup is not None:
                self._arm(wakeup)

    def pop(self, request_id: str) -> PendingCall | None:
        """Unregister a call (it is settled, or about to be); None if it is not pending."""
        call = self._calls.pop(request_id, None)
        if call is not None and call.lifetime is not None:
            self._deadlines.remove(request_id, call.lifetime)
            if not self._calls and self._timer is not None:  # the timer would keep the client alive until it fires
                self._timer.close()
                self._timer = None
                self._deadlines.disarm()
        return call

    def _arm(self, wakeup: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = gevent.get_hub().loop.timer(max(0.0, wakeup - time.monotonic()), ref=False)
        self._timer.start(self._expire)

    def _expire(self) -> None:
        """Time out every call whose deadline has passed (in the hub), then arm the timer for the next."""
        self._timer.close()
        self._timer = None
        due, wakeup = self._deadlines.expire(time.monotonic())
        if wakeup is not None:
            self._arm(wakeup)
        expired = [self._calls.pop(request_id) for request_id in due]
        no_broker = self._no_broker() if expired else None
        for call in expired:
            call.time_out(no_broker)
