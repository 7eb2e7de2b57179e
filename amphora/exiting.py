"""Servers and clients still running when the interpreter exits are stopped as ``stop()`` would stop them.

A script that ends without ``stop()`` would otherwise leave the requests it answered unacknowledged (acks are
gathered for a few milliseconds), so that they run again elsewhere, and its outbox unpublished. At exit
(:mod:`atexit`), each one still running gets ``exit_timeout`` seconds to finish its requests and have its
messages confirmed, all at once; then it disconnects. Only weak references are kept: nothing is kept alive.
A forked child forgets its parent's.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Protocol

import gevent

log = logging.getLogger(__name__)

CLOSE_TIME = 5.0
"""Seconds allowed beyond the longest ``exit_timeout`` for closing connections at exit."""


class Stoppable(Protocol):
    exit_timeout: float | None

    def _stop_at_exit(self, timeout: float) -> None: ...


_running: weakref.WeakSet[Stoppable] = weakref.WeakSet()
os.register_at_fork(after_in_child=_running.clear)  # a child does not stop its parent's connections


def running(instance: Stoppable) -> None:
    """``instance`` serves (or calls) from now on: stop it at exit unless it is stopped first."""
    _running.add(instance)


def stopped(instance: Stoppable) -> None:
    """``instance`` was stopped: nothing to do for it at exit."""
    _running.discard(instance)


def _stop_quietly(instance: Stoppable, timeout: float) -> None:
    try:
        instance._stop_at_exit(timeout)
    except Exception:
        log.exception("stopping %r at exit failed", instance)


@atexit.register
def stop_all() -> None:
    """Stop every instance still running that has an ``exit_timeout``, all at once."""
    instances = [(i, timeout) for i in list(_running) if (timeout := i.exit_timeout) is not None]
    _running.clear()
    if instances:
        greenlets = [gevent.spawn(_stop_quietly, instance, timeout) for instance, timeout in instances]
        gevent.joinall(greenlets, timeout=max(timeout for _, timeout in instances) + CLOSE_TIME)
