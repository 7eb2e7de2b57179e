"""Calls waiting for replies: one reply (``call``/``defer``), or one from every server (``gather``)."""

from __future__ import annotations

from typing import Any

import gevent
from gevent.event import AsyncResult

from .exceptions import NoResult, RequestExpired


def expiry_grace(timeout: float) -> float:
    """How long past its timeout a call waits for its request to come back expired before NoResult."""
    return min(1.0, 0.1 + 0.05 * timeout)


class PendingCall:
    """A call waiting for its one reply; ``result`` is the AsyncResult its caller holds."""

    __slots__ = ("function", "result", "timeout", "timer")

    def __init__(self, function: str, timeout: float | None) -> None:
        self.result = AsyncResult()
        self.function = function
        self.timeout = timeout
        self.timer: Any = None

    def start_timer(self, on_timeout: Any, *args: Any) -> None:
        """Call ``on_timeout(*args)`` when the call has waited long enough (never without a timeout)."""
        if self.timeout:
            self.timer = gevent.get_hub().loop.timer(self.timeout + expiry_grace(self.timeout))
            self.timer.start(on_timeout, *args)

    def cancel(self) -> None:
        """Forget the call: its timer stops and its result is never set."""
        if self.timer is not None:
            self.timer.close()

    def add_reply(self, server: str, value: Any, error: BaseException | None) -> bool:
        """Take a server's reply; True once the call is complete."""
        self.settle(value, error)
        return True

    def expired(self, reason: str) -> bool:
        """The request came back unexecuted (dead-lettered); True once the call is complete."""
        self.settle(error=RequestExpired(f"no server took the call to {self.function} in time ({reason})"))
        return True

    def time_out(self) -> None:
        self.settle(error=NoResult(f"no reply to {self.function} within {self.timeout} s"))

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if self.timer is not None:
            self.timer.close()
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
        self.expect = expect
        self.replies: dict[str, Any] = {}

    def start_timer(self, on_timeout: Any, *args: Any) -> None:
        self.timer = gevent.get_hub().loop.timer(self.timeout)  # no grace: what came by then is the answer
        self.timer.start(on_timeout, *args)

    def add_reply(self, server: str, value: Any, error: BaseException | None) -> bool:
        self.replies[server] = value if error is None else error
        if self.expect is not None and len(self.replies) >= self.expect:
            self.settle(self.replies)
            return True
        return False

    def expired(self, reason: str) -> bool:
        return False  # a copy nobody took: the servers that did take theirs still answer

    def time_out(self) -> None:
        self.settle(self.replies)
