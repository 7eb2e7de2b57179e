"""Coroutine handlers: a server's ``async def`` functions, run on an asyncio event loop.

A request is handled in a worker greenlet, whatever its handler. For a coroutine handler that greenlet
hands the coroutine to an event loop in another OS thread and waits for its outcome without blocking its
hub: the task's done-callback posts the outcome to the hub's :class:`HubInbox`. Both ways are batched: one
``call_soon_threadsafe`` (:class:`~amphora.hub_thread.AsyncioInbox`) or one wake-up of the hub (libev's
async watcher) for all that was posted before the other side drained it, not one per request.

The loop is the application's when it hosts the server (:meth:`amphora.aio_server.AmqpRpcServer.serve`), else one that
amphora runs for the whole process in a daemon thread of its own, started at the first coroutine handler.
The worker is held until the coroutine ends, so a server's ``concurrency`` bounds coroutine handlers too,
and a graceful stop waits for them. When the time limit passes, or the worker is killed, the task is
cancelled; the worker does not wait for the cancellation to land.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.monkey import get_original, is_module_patched

from .hub_thread import AsyncioInbox, Batch, real_lock

log = logging.getLogger(__name__)


class CoroutineRun:
    """One coroutine handler's run: its task on the loop, its outcome for the greenlet waiting in a hub."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], inbox: HubInbox) -> None:
        self._coroutine = coroutine
        self._inbox = inbox  # the waiting greenlet's hub's
        self._outcome = AsyncResult()  # set in the hub's own thread only
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def begin(self) -> None:
        """Start the task (in the loop's thread), unless cancelled first."""
        if self._cancelled:
            self._coroutine.close()
            return
        self._task = asyncio.ensure_future(self._coroutine)
        self._task.add_done_callback(self._finished)

    def cancel(self) -> None:
        """Cancel the task (in the loop's thread), or, not begun yet, never begin it."""
        if self._task is None:
            self._cancelled = True
        else:
            self._task.cancel()

    @property
    def done(self) -> bool:
        return bool(self._outcome.ready())

    def result(self) -> Any:
        """The coroutine's result (in the greenlet that started it); raises what it raised."""
        return self._outcome.get()

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            outcome: tuple[Any, BaseException | None] = (None, asyncio.CancelledError())
        else:
            error = task.exception()
            outcome = (None, error) if error is not None else (task.result(), None)
        try:
            self._inbox.post(self._deliver, *outcome)
        except Exception:  # the hub was destroyed: nobody waits any more
            log.debug("coroutine handler ended after its hub", exc_info=True)

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        if error is None:
            self._outcome.set(value)
        else:
            self._outcome.set_exception(error)


class HubInbox:
    """Outcomes posted to a hub from the loops' threads, delivered in the hub, one wake-up per batch (libev's
    async watcher). While runs wait, it keeps the hub's loop alive, as a socket being read would."""

    def __init__(self) -> None:
        self._watcher = gevent.get_hub().loop.async_(ref=False)
        self._batch = Batch(self._watcher.send)
        self._watcher.start(self._batch.drain)
        self._waiting = 0

    @classmethod
    def of_current_hub(cls) -> HubInbox:
        """The inbox of the calling thread's hub (made on first use)."""
        hub = gevent.get_hub()
        inbox = _hub_inboxes.get(hub)
        if inbox is None:
            inbox = _hub_inboxes[hub] = cls()
        return inbox

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have ``fn(*args)`` run in the hub (thread-safe)."""
        self._batch.post(fn, *args)

    def wait(self, run: CoroutineRun) -> Any:
        """``run``'s result, in a greenlet of the hub; the hub's loop stays alive meanwhile."""
        self._waiting += 1
        self._watcher.ref = True
        try:
            return run.result()
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._watcher.ref = False


_hub_inboxes: weakref.WeakKeyDictionary[Any, HubInbox] = weakref.WeakKeyDictionary()
_process_loop: asyncio.AbstractEventLoop | None = None
_process_loop_lock = real_lock()
_start_new_thread = get_original("_thread", "start_new_thread")  # a real thread, also in a patched process


def _forget_in_child() -> None:
    """A forked child has no loop thread: it starts its own when it needs one."""
    global _process_loop
    _process_loop = None
    _hub_inboxes.clear()  # the parent's watchers


os.register_at_fork(after_in_child=_forget_in_child)


def process_loop() -> asyncio.AbstractEventLoop:
    """The event loop amphora runs coroutine handlers on when no application loop hosts the server: started
    at the first call, in a daemon OS thread (a real one, also in a monkey-patched process)."""
    global _process_loop
    loop = _process_loop
    if loop is not None:
        return loop
    with _process_loop_lock:
        if _process_loop is None:
            if is_module_patched("selectors"):  # the loop's thread has no hub to wait in: block in the kernel
                selector = get_original("selectors", "DefaultSelector")()
                _process_loop = asyncio.SelectorEventLoop(selector)
            else:
                _process_loop = asyncio.new_event_loop()
            AsyncioInbox.of(_process_loop)  # made before the loop runs, as it must be made in the loop's thread
            _start_new_thread(_process_loop.run_forever, ())
        return _process_loop


def run(
    func: Callable[..., Coroutine[Any, Any, Any]],
    args: list[Any],
    kwargs: dict[str, Any],
    loop: asyncio.AbstractEventLoop | None,
) -> Any:
    """Run the coroutine function ``func`` on ``loop`` (None: :func:`process_loop`) and wait for its result
    in this greenlet; its task is cancelled if the greenlet is interrupted (a time limit, a kill)."""
    target = loop or process_loop()
    if target.is_closed():
        raise RuntimeError("the event loop of coroutine handlers is closed")
    hub_inbox = HubInbox.of_current_hub()
    coroutine_run = CoroutineRun(func(*args, **kwargs), hub_inbox)
    loop_inbox = AsyncioInbox.of(target)
    loop_inbox.post(coroutine_run.begin)
    try:
        return hub_inbox.wait(coroutine_run)
    except BaseException:
        if not coroutine_run.done:
            loop_inbox.post(coroutine_run.cancel)
        raise
