"""Calls from any OS thread: a client's own thread calls directly, every other thread through a twin.

A gevent client serves the greenlets of the OS thread that created it. A call from another OS thread (a
thread pool, a web framework's worker thread, gevent's own thread pool) cannot use that thread's hub, so it
goes to the client's *twin*: an ordinary client of the same service and options (its own uuid and reply
queue) living in the process's :class:`~amphora.hub_thread.HubThread`, made on the first such call. The
calling thread posts the call to the hub thread and, for ``call``, waits on an OS lock: it blocks, nothing
else does. Results come back in a :class:`ThreadResult`.

The twin is the same code as the client, so every guarantee holds unchanged (outbox, confirms, deadlines,
RequestExpired/NoResult); :mod:`amphora.aio` goes through the same :func:`relay`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult

from .hub_thread import HubThread, get_ident, real_lock
from .pending import PendingCall

if TYPE_CHECKING:
    from .client import AmqpRpcClient

Settle = Callable[[Any, "BaseException | None"], None]
"""``settle(value, error)``: hands a call's outcome to whoever waits for it, in another thread."""

STARTERS = {"call": "_defer", "defer": "_defer", "cast": "_cast", "gather": "_defer_gather"}
"""For each kind of call, the client method that starts it and returns the AsyncResult of its outcome."""
DIRECT_KINDS = frozenset({"call", "defer"})
"""Kinds of calls started as a :class:`RelayedCall`."""
WAITING_KINDS = frozenset({"call", "gather"})
"""Kinds of calls whose caller waits for the outcome; the others get a result to wait on."""


class ThreadResult:
    """The outcome of a call made from a foreign OS thread, waited for on an OS lock (blocking that
    thread only). Reads like gevent's AsyncResult: ``get(timeout=None)``, ``wait``, ``ready``,
    ``successful``, ``value``, ``exception``."""

    __slots__ = ("_done", "exception", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.exception: BaseException | None = None
        self._done = real_lock()
        self._done.acquire()

    def settle(self, value: Any, error: BaseException | None = None) -> None:
        """Set the outcome (once; from any thread)."""
        self.value, self.exception = value, error
        self._done.release()

    def ready(self) -> bool:
        return not self._done.locked()

    def successful(self) -> bool:
        return self.ready() and self.exception is None

    def wait(self, timeout: float | None = None) -> bool:
        """Block this thread until the outcome is set, at most ``timeout`` seconds; whether it is."""
        if self._done.acquire(timeout=-1 if timeout is None else timeout):
            self._done.release()
            return True
        return False

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The value, or raise the exception; TimeoutError if it is not set within ``timeout`` seconds
        (at once with ``block=False``)."""
        if not self.wait(timeout if block else 0):
            raise TimeoutError("the call has no outcome yet")
        if self.exception is not None:
            raise self.exception
        return self.value


def relay(client: AmqpRpcClient, kind: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
          options: dict[str, Any], settle: Settle) -> None:  # fmt: skip
    """In the client's thread: start a call of ``kind``, and ``settle`` its outcome when it comes."""
    if options.get("wait_publish"):  # waits for the broker's confirm: not in the posting greenlet
        gevent.spawn(_start, client, kind, name, args, kwargs, options, settle)
    else:
        _start(client, kind, name, args, kwargs, options, settle)


def _start(client: AmqpRpcClient, kind: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
           options: dict[str, Any], settle: Settle) -> None:  # fmt: skip
    try:
        if kind in DIRECT_KINDS and not client._watches_results():  # else its AsyncResult must be set
            client._request(name, args, kwargs, make_pending=functools.partial(RelayedCall, settle=settle), **options)
            return
        result: AsyncResult = getattr(client, STARTERS[kind])(name, args, kwargs, **options)
    except BaseException as exc:  # e.g. arguments the serializer cannot encode
        settle(None, exc)
    else:
        result.rawlink(functools.partial(_settle_from, settle))


class RelayedCall(PendingCall):
    """A call whose outcome goes straight to ``settle`` (of the calling thread), not through its AsyncResult
    and a link to it: a few microseconds less per call."""

    __slots__ = ("_settle",)

    def __init__(self, function: str, timeout: float | None, settle: Settle) -> None:
        super().__init__(function, timeout)
        self._settle = settle

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        self._settle(value, error)


def _settle_from(settle: Settle, result: AsyncResult) -> None:
    settle(result.value, result.exception)


def _make_twin(kind: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any], tuners: dict[str, Any]) -> Any:
    """A client like the one made with ``kind(*args, **kwargs)``, started, with a uuid (reply queue) of its own."""
    positional, options = list(args), dict(kwargs)
    for index, name, value in ((1, "uuid", None), (4, "autostart", True)):  # AmqpRpcClient's positions
        if len(positional) > index:
            positional[index] = value
        else:
            options[name] = value
    twin = kind(*positional, **options)
    twin._tuners = tuners  # the original's, tuned from any thread
    return twin


class AnyThread:
    """Mixed into AmqpRpcClient: routes the calls of other OS threads to the client's twin."""

    _arguments: tuple[tuple[Any, ...], dict[str, Any]]
    _home: int
    _twin: Any
    _twin_lock: Any
    _tuners: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        self._arguments = (args, kwargs)  # to make the twin alike
        self._home = get_ident()
        self._twin = None
        self._twin_lock = real_lock()
        return self

    def _any_thread(self, kind: str, invoke: Callable[..., Any]) -> Callable[..., Any]:
        """``invoke`` for calls from the client's own thread, the twin for the others."""
        home = self._home

        def route(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any:
            if get_ident() == home:
                return invoke(name, args, kwargs, **options)
            return self._call_from_another_thread(kind, name, args, kwargs, options)

        return route

    def _call_from_another_thread(
        self, kind: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Any:
        hub, twin = self._get_twin()
        if hub.in_thread():  # code running in the hub thread itself: the twin is at home there
            result: Any = getattr(twin, STARTERS[kind])(name, args, kwargs, **options)
        else:
            result = ThreadResult()
            hub.post(relay, twin, kind, name, args, kwargs, options, result.settle)
        return result.get() if kind in WAITING_KINDS else result

    def _get_twin(self) -> tuple[HubThread, Any]:
        with self._twin_lock:
            hub = HubThread.shared()
            if self._twin is None:
                args, kwargs = self._arguments
                if hub.in_thread():
                    self._twin = _make_twin(type(self), args, kwargs, self._tuners)
                else:
                    made = ThreadResult()  # made in a greenlet of its own: connecting may take a while
                    hub.spawn(_run_and_settle, made.settle, _make_twin, type(self), args, kwargs, self._tuners)
                    self._twin = made.get()
            return hub, self._twin

    def _stop_twin(self) -> None:
        """Stop the twin, if any (what it holds unconfirmed is dropped); the next foreign call makes another."""
        with self._twin_lock:
            twin, self._twin = self._twin, None
        if twin is not None:
            HubThread.shared().post(gevent.spawn, twin.stop)


def _run_and_settle(settle: Settle, make: Callable[..., Any], *args: Any) -> None:
    try:
        made = make(*args)
    except BaseException as exc:
        settle(None, exc)
    else:
        settle(made, None)
