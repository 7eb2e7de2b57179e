"""Servers and clients still running when the interpreter exits are stopped as ``stop()`` would stop them.

A script that ends without ``stop()`` would otherwise leave the requests it answered unacknowledged (acks are
gathered for a few milliseconds), so that they run again elsewhere, and its outbox unpublished. At exit
(:mod:`atexit`), each one still running gets ``exit_timeout`` seconds to finish its requests and have its
messages confirmed, all at once; then it disconnects. Only weak references are kept: nothing is kept alive.
A forked child forgets its parent's.

Each instance is stopped in the OS thread it was started in (its gevent hub's): :func:`stop_all` stops those
of the calling thread; the atexit hook those of the main thread and anything registered with
``thread=AT_EXIT`` (e.g. :class:`~amphora.hub_thread.HubThread`, which stops its own the same way).
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Protocol

import gevent
from gevent.monkey import get_original

log = logging.getLogger(__name__)

CLOSE_TIME = 5.0
"""Seconds allowed beyond the longest ``exit_timeout`` for closing connections at exit."""


class Stoppable(Protocol):
    @property
    def exit_timeout(self) -> float | None: ...

    def _stop_at_exit(self, timeout: float) -> None: ...


_get_ident = get_original("_thread", "get_ident")  # the OS thread's, also in a patched process
AT_EXIT = 0
"""``running(instance, thread=AT_EXIT)``: stopped by the atexit hook, whichever thread runs it."""

_running: weakref.WeakKeyDictionary[Stoppable, int] = weakref.WeakKeyDictionary()
"""The instances to stop, and the ident of the OS thread each runs in."""
os.register_at_fork(after_in_child=_running.clear)  # a child does not stop its parent's connections


def running(instance: Stoppable, thread: int | None = None) -> None:
    """``instance`` serves (or calls) from now on, in the calling OS thread unless ``thread`` is given:
    stop it at exit unless it is stopped first."""
    _running[instance] = _get_ident() if thread is None else thread


def stopped(instance: Stoppable) -> None:
    """``instance`` was stopped: nothing to do for it at exit."""
    _running.pop(instance, None)


def longest_exit_timeout(thread: int) -> float | None:
    """The longest ``exit_timeout`` of the instances running in ``thread`` (None: nothing to wait for)."""
    timeouts = [i.exit_timeout for i, t in list(_running.items()) if t == thread and i.exit_timeout is not None]
    return max(timeouts, default=None)


def _stop_quietly(instance: Stoppable, timeout: float) -> None:
    try:
        instance._stop_at_exit(timeout)
    except Exception:
        log.exception("stopping %r at exit failed", instance)


def stop_all(threads: tuple[int, ...] = ()) -> None:
    """Stop every instance still running in the calling OS thread (or in ``threads``) that has an
    ``exit_timeout``, all at once."""
    threads = (_get_ident(), *threads)
    instances = []
    for instance, thread in list(_running.items()):
        if thread in threads:
            del _running[instance]
            if (timeout := instance.exit_timeout) is not None:
                instances.append((instance, timeout))
    if instances:
        greenlets = [gevent.spawn(_stop_quietly, instance, timeout) for instance, timeout in instances]
        gevent.joinall(greenlets, timeout=max(timeout for _, timeout in instances) + CLOSE_TIME)


@atexit.register
def _stop_at_exit() -> None:
    stop_all((AT_EXIT,))
