"""The exceptions of amphora's RPC API."""

from __future__ import annotations

from typing import Any


class AmphoraError(Exception):
    """Base of amphora's RPC errors."""


class RemoteException(AmphoraError):
    """The remote function raised an exception; ``error_type`` is its class name, ``args`` its arguments,
    and ``traceback`` the remote traceback as text when the server sends them (``tracebacks=True``)."""

    def __init__(self, error_type: str, args: tuple[Any, ...] | list[Any] = (), traceback: str | None = None) -> None:
        super().__init__(*args)
        self.error_type = error_type
        self.traceback = traceback

    def __str__(self) -> str:
        detail = ", ".join(repr(a) if not isinstance(a, str) else a for a in self.args)
        return f"{self.error_type}: {detail}" if detail else self.error_type

    def __repr__(self) -> str:
        return f"RemoteException({self.error_type!r}, {self.args!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteException, (self.error_type, self.args, self.traceback))


class WrongRequest(AmphoraError):
    """The server could not take the request: unknown function, a request it cannot parse, or arguments that
    do not fit the function's type hints."""


class HandlerTimeout(AmphoraError):
    """The remote function ran past its time limit; the server stopped waiting for it."""


class WrongResult(AmphoraError):
    """The reply could not be parsed."""


class NoResult(AmphoraError):
    """No result came within the call's timeout: the request may have run, or may not."""


class RequestExpired(NoResult):
    """The request never ran: a server received it after its deadline, on its first delivery, and dropped it
    unrun (it came back dead-lettered, reason ``rejected``). Calling again cannot run it twice."""


class RequestMayHaveRun(NoResult):
    """The request came back dead-lettered unanswered (the broker expired it in its queue, or it went over a
    queue limit), but it may have been delivered to a server before, which may have run it: the broker's
    dead-lettered copy does not tell. Most often no server took it at all."""


class BrokerUnavailable(NoResult):
    """No result came within the call's timeout, and the client could not connect to any broker at that
    time; the message names the broker and the last connection error. As with NoResult, the request may
    have run (it may have reached the broker before the connection was lost)."""


class Unroutable(AmphoraError):
    """No queue is bound to the request's routing key (e.g. a per-key queue that was never created)."""


class ReplyQueueLost(AmphoraError):
    """The client's reply queue disappeared (expired or deleted) while calls waited on it."""


class OutboxFull(AmphoraError):
    """The outbox holds its maximum of unconfirmed messages and was told not to wait."""


class IgnoreRequest(Exception):
    """Raise in a handler to decline a request: a normal server passes it to another server, a fanout
    server acknowledges it without replying."""
