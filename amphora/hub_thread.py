"""A real OS thread running a gevent hub of its own, and batched thread-safe wake-ups into gevent and asyncio.

Threads other than a client's own and asyncio code reach amphora's (gevent) reliability core through one
:class:`HubThread` per process (:meth:`HubThread.shared`): they post callables to it, and get their results
back through an :class:`AsyncioInbox` (asyncio) or a lock (threads, :mod:`amphora.threaded`).

Crossing threads costs a wake-up: a write to the hub's eventfd (libev's async watcher) or to asyncio's
self-pipe (``call_soon_threadsafe``), and a GIL hand-over. Both inboxes batch: what is posted while a wake-up
is pending rides on it, so a busy caller pays one wake-up per batch, not one per call.

Why one hub thread, by measurement (2 shared cores): a hop there and back costs about 10 us from a thread and
20 us from asyncio (p50, nothing else running in the process), against 0.6 to 1 ms for a call's broker round
trip. With 100 in flight, batched hops run at about 190,000/s from asyncio; one ``call_soon_threadsafe`` per
result, 56,000/s (from a thread, libev's async watcher coalesces wake-ups itself: about 190,000/s either
way). ``bench.rpc`` W2 uses 35 to 50 calls per wake-up. The alternatives cost more: a second,
asyncio-native reliability core would be written twice; a gevent client per calling thread needs that thread
to run gevent's hub, which a thread blocked in a lock does not do, and a client (two connections, a reply
queue) per thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.threadpool  # noqa: F401 - resolving a broker's name needs it, and at exit it cannot be imported
from gevent.hub import Waiter
from gevent.monkey import get_original

from . import exiting

log = logging.getLogger(__name__)

get_ident: Callable[[], int] = get_original("_thread", "get_ident")
"""The OS thread's ident, also in a process gevent patched (where ``threading.get_ident`` names a greenlet)."""
_allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")
_start_new_thread: Callable[..., int] = get_original("_thread", "start_new_thread")


def real_lock() -> Any:
    """A lock of the OS (not gevent's, even in a patched process): acquiring it blocks the whole thread."""
    return _allocate_lock()


class Batch:
    """Callbacks posted from any thread, run in order by :meth:`drain` in the thread that owns the batch.

    ``wake()`` (thread-safe) is called when the first callback of a batch is posted; callbacks posted
    before the owner's next :meth:`drain` starts ride on that wake-up.
    """

    __slots__ = ("_armed", "_items", "_wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self._items: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._armed = False
        self._wake = wake

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have ``fn(*args)`` run in the owner's thread (thread-safe, never blocks)."""
        self._items.append((fn, args))
        if not self._armed:
            self._armed = True
            self._wake()

    def __bool__(self) -> bool:
        return bool(self._items)

    def drain(self) -> None:
        """Run every callback posted so far, and those posted meanwhile; one that raises is logged."""
        self._armed = False  # from now on a post wakes the owner again
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("callback %r failed", fn)


class GeventInbox:
    """Callables posted from any thread run in a greenlet of the hub that created the inbox, in order.

    They run one after the other in one greenlet: they may block briefly (the next ones wait meanwhile);
    anything longer should spawn. ``ref``: whether the inbox keeps its hub's loop running.
    """

    def __init__(self, ref: bool = True) -> None:
        self._batch = Batch(self._send)
        self._watcher = gevent.get_hub().loop.async_(ref=ref)
        self._watcher.start(self._on_wake)
        self._waiter: Waiter | None = None
        self._woken = False
        self._drainer = gevent.spawn(self._drain_forever)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have ``fn(*args)`` run in the inbox's hub (thread-safe)."""
        self._batch.post(fn, *args)

    def _send(self) -> None:
        self._watcher.send()

    def _on_wake(self) -> None:
        """In the hub: resume the drainer, or tell it to drain again once it is done with what it runs."""
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            self._woken = True
        else:
            waiter.switch(None)

    def _drain_forever(self) -> None:
        while True:
            if not self._woken and not self._batch:
                self._waiter = Waiter()
                self._waiter.get()
            self._woken = False
            self._batch.drain()

    def close(self) -> None:
        self._drainer.kill(block=False)
        self._watcher.close()


class AsyncioInbox:
    """Callables posted from any thread run in an asyncio event loop, in order, batched (one
    ``call_soon_threadsafe`` per batch). One per loop: :meth:`of`."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncioInbox] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # not kept alive by its inbox (the registry's key)
        self._batch = Batch(self._send)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> AsyncioInbox:
        """The inbox of ``loop`` (made on first use; call this in the loop's thread)."""
        inbox = cls._by_loop.get(loop)
        if inbox is None:
            inbox = cls._by_loop[loop] = cls(loop)
        return inbox

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have ``fn(*args)`` run in the loop (thread-safe); dropped if the loop is closed."""
        self._batch.post(fn, *args)

    def _send(self) -> None:
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self._batch.drain)
        except RuntimeError:  # the loop is closed: nobody waits for these any more
            log.debug("asyncio loop closed: dropping what was posted to it")

    def settle(self, future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
        """Complete ``future`` of this loop from any thread (nothing if it was cancelled meanwhile)."""
        self.post(_settle_future, future, value, error)


def _settle_future(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def gevent_wait(future: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    """In a greenlet: the result of ``future``, completed in another thread, blocking only this greenlet.

    Raises its exception, or gevent.Timeout after ``timeout`` seconds.
    """
    hub = gevent.get_hub()
    watcher = hub.loop.async_()
    waiter = Waiter()
    watcher.start(waiter.switch, None)
    lock = real_lock()
    waiting = [True]

    def wake(_: concurrent.futures.Future[Any]) -> None:
        with lock:  # not once the watcher is closed
            if waiting[0]:
                watcher.send()

    future.add_done_callback(wake)
    try:
        with gevent.Timeout(timeout):
            waiter.get()
    finally:
        with lock:
            waiting[0] = False
            watcher.close()
    return future.result(0)


DEFAULT_EXIT_TIMEOUT = 10.0
"""The ``exit_timeout`` of a client by default."""


class HubThread:
    """A daemon OS thread running its own gevent hub; callables submitted from any thread run there.

    One per process is enough: :meth:`shared` starts it on first use. At interpreter exit, what runs in it
    is stopped as :mod:`amphora.exiting` stops it in the main thread (outboxes flushed), then the thread ends.
    """

    _shared: HubThread | None = None
    _shared_lock = real_lock()

    def __init__(self, name: str = "amphora-hub") -> None:
        self.name = name
        self.ident = 0
        self._inbox: GeventInbox | None = None
        self._awaited: set[gevent.Greenlet] = set()
        self._stopping: gevent.event.Event | None = None
        self._started = real_lock()
        self._ended = real_lock()
        self._started.acquire()
        self._ended.acquire()
        _start_new_thread(self._run, ())
        self._started.acquire()  # released by the thread once it can take submissions

    @classmethod
    def shared(cls) -> HubThread:
        """The process's hub thread, started on first use (thread-safe)."""
        with cls._shared_lock:
            if cls._shared is None or not cls._shared.running:
                cls._shared = cls()
                exiting.running(cls._shared, thread=exiting.AT_EXIT)
            return cls._shared

    @property
    def running(self) -> bool:
        return self._inbox is not None

    def in_thread(self) -> bool:
        """Whether the caller runs in this hub thread."""
        return get_ident() == self.ident

    def _run(self) -> None:
        try:
            self.ident = get_ident()
            self._inbox = GeventInbox()
            self._stopping = gevent.event.Event()
            self._started.release()
            self._stopping.wait()
            self._inbox.close()
            self._inbox = None
            gevent.get_hub().destroy(destroy_loop=True)
        finally:
            self._ended.release()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the hub thread, in order with other posts, in one greenlet (see
        :class:`GeventInbox`: it may block briefly, not longer). Thread-safe, never blocks."""
        inbox = self._inbox
        if inbox is None:
            raise RuntimeError(f"{self.name} is stopped")
        inbox.post(fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` in a greenlet of its own in the hub thread (it may block); the future gets
        its result or exception."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.post(gevent.spawn, _complete, future, fn, args)
        return future

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a greenlet of its own in the hub thread, which waits for it at exit before
        stopping what runs there (e.g. making a client, whose calls wait for it)."""
        self.post(self._spawn_awaited, fn, args)

    def _spawn_awaited(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        greenlet = gevent.spawn(fn, *args)
        self._awaited.add(greenlet)
        greenlet.rawlink(self._awaited.discard)

    def _stop_residents(self, timeout: float) -> None:
        """In the hub thread, at exit: wait for the greenlets of :meth:`spawn`, then stop what runs there."""
        gevent.joinall(list(self._awaited), timeout=timeout)
        exiting.stop_all()

    @property
    def exit_timeout(self) -> float:
        """How long what runs in the thread may take to stop at exit (see :mod:`amphora.exiting`); a client
        still being made there counts with the default ``exit_timeout``."""
        longest = exiting.longest_exit_timeout(self.ident)
        return DEFAULT_EXIT_TIMEOUT if longest is None else longest

    def _stop_at_exit(self, timeout: float) -> None:
        """At interpreter exit: stop what runs in the thread as :func:`amphora.exiting.stop_all` does (within
        ``timeout`` seconds and the time to close), then the thread."""
        if self.running:
            gevent_wait(self.submit(self._stop_residents, timeout), 2 * timeout + exiting.CLOSE_TIME)
        self.stop(exiting.CLOSE_TIME)

    def stop(self, timeout: float | None = None) -> None:
        """End the thread (what still runs in it is dropped); wait up to ``timeout`` seconds for it."""
        exiting.stopped(self)
        stopping = self._stopping
        if stopping is None or not self.running or self.in_thread():
            return
        self.post(stopping.set)
        self._ended.acquire(timeout=-1 if timeout is None else timeout)


def _complete(future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
