"""Workers: a bounded set of long-lived greenlets that run jobs in the order they came.

A server runs each request in a worker rather than in a greenlet of its own: a new greenlet costs its
creation and, on Python 3.11+, a frame stack mapped from the operating system (an ``mmap`` and ``munmap``
per request, measured with strace). A worker stays and takes the next job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.queue import Empty, Queue

log = logging.getLogger(__name__)

Job = tuple[Callable[[Any], None], Any, Callable[[], None] | None]
"""``(function, argument, done)``: a worker calls ``function(argument)``, then ``done()``."""


class Workers:
    """Runs ``function(argument)`` jobs in at most ``size`` greenlets, started when needed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._jobs: Queue[Job] = Queue()
        self._workers: set[gevent.Greenlet] = set()
        self._idle: set[gevent.Greenlet] = set()  # workers waiting for a job
        self._unclaimed_idle = 0  # workers blocked waiting for a job that no submitted job is promised to
        self._unfinished = 0
        self._all_done = Event()
        self._all_done.set()

    @property
    def busy(self) -> int:
        """Jobs submitted and not finished (running or waiting for a worker)."""
        return self._unfinished

    def submit(self, function: Callable[[Any], None], argument: Any, done: Callable[[], None] | None = None) -> None:
        """Run ``function(argument)`` in a worker as soon as one is free; then call ``done()``. Never blocks."""
        self._unfinished += 1
        self._all_done.clear()
        if self._unclaimed_idle:
            self._unclaimed_idle -= 1
        elif len(self._workers) < self.size:
            worker = gevent.spawn(self._work)
            self._workers.add(worker)
            worker.link(self._workers.discard)
        self._jobs.put((function, argument, done))

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has finished; False if ``timeout`` passed first."""
        return self._all_done.wait(timeout)

    def close(self) -> None:
        """End the workers waiting for a job; busy ones go on. Later jobs start new workers."""
        if self._jobs.qsize():
            return  # jobs wait for the idle workers already promised to them
        for worker in self._idle:
            worker.kill(block=False)
            self._workers.discard(worker)
        self._idle.clear()
        self._unclaimed_idle = 0

    def _work(self) -> None:
        jobs = self._jobs
        me = gevent.getcurrent()
        while True:
            try:
                function, argument, done = jobs.get_nowait()  # queued when every worker was busy
            except Empty:
                self._unclaimed_idle += 1
                self._idle.add(me)
                try:
                    function, argument, done = jobs.get()  # its submitter counted on this worker
                finally:
                    self._idle.discard(me)
            try:
                function(argument)
            except Exception:
                log.exception("job %r failed", function)
            finally:
                self._unfinished -= 1
                if not self._unfinished:
                    self._all_done.set()
                if done is not None:
                    done()
