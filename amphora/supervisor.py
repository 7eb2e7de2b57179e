"""``amphora serve --processes N``: a supervisor that runs N server processes of one ``MODULE:OBJECT``.

The supervisor imports nothing of the service and forks nothing: each child is a fresh ``python -m amphora
serve ...`` (without ``--processes``), so no connection or greenlet of the parent is ever shared. Each child
gets one end of a socket pair (its number in ``$AMPHORA_SUPERVISOR_FD``): it writes one byte there once its
server consumes, and it stops gracefully when the other end closes (the supervisor is gone, even by
``kill -9``). ``$AMPHORA_PROCESS`` tells a child its place, ``INDEX/COUNT``: its log lines show it, and a
service may use it (e.g. to give each process its own metrics port).

Process 0 starts first; the others start once it serves, so that a target that cannot start (a typo, a
module that fails to import, a broker that cannot be reached) fails once, with its error shown once, and the
supervisor exits with status 2. A child that dies later is restarted after a backoff (:class:`RestartPolicy`);
one that then keeps exiting before it serves makes the supervisor give up. SIGINT and SIGTERM are passed on
as SIGTERM: every child stops gracefully (running requests finish and their replies are confirmed), and the
supervisor exits once they all have, with status 0 if they all exited with 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gevent
from gevent import socket, subprocess
from gevent.event import Event

log = logging.getLogger("amphora.supervisor")

PROCESS_VARIABLE = "AMPHORA_PROCESS"
"""``INDEX/COUNT`` in the environment of each child of the supervisor."""
SUPERVISOR_FD_VARIABLE = "AMPHORA_SUPERVISOR_FD"
"""The child's end of its socket pair with the supervisor (read once by :func:`supervised`, then removed)."""
READY = b"r"
EXIT_CANNOT_START = 2


@dataclass
class RestartPolicy:
    """When to restart a child that exited while nobody asked it to, and when to give up.

    A child that ran less than ``stable_after`` seconds counts as one more crash in a row; the ``n``-th crash
    in a row waits ``min(max_delay, first_delay * 2 ** (n - 1))`` before the restart. ``max_failed_starts``
    exits in a row before serving (after some process has served once) end everything; before any process
    served, the first such exit does.
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 10.0
    max_failed_starts: int = 5

    def delay(self, crashes: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** max(0, crashes - 1))


@dataclass
class SlotState:
    """What the policy remembers of one child index."""

    crashes: int = 0
    failed_starts: int = 0


def after_exit(policy: RestartPolicy, slot: SlotState, served: bool, ran: float, any_served: bool) -> float | None:
    """Seconds to wait before restarting the child of ``slot`` that exited unasked after ``ran`` seconds
    (``served``: it had started consuming), or None to give up. Updates ``slot``."""
    if served:
        slot.failed_starts = 0
    else:
        slot.failed_starts += 1
        if not any_served or slot.failed_starts >= policy.max_failed_starts:
            return None
    slot.crashes = slot.crashes + 1 if ran < policy.stable_after else 1
    return policy.delay(slot.crashes)


def describe_status(status: int) -> str:
    """``exited with status 1`` or ``was killed by signal 9 (SIGKILL)``."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-status} ({name})"
    return f"exited with status {status}"


class Supervisor:
    """Runs ``count`` children, child ``i`` with the command ``command(i)``, until :meth:`stop`."""

    def __init__(
        self, command: Callable[[int], Sequence[str]], count: int, policy: RestartPolicy | None = None
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.command = command
        self.count = count
        self.policy = policy or RestartPolicy()
        self.status = 0
        self._stopping = Event()
        self._first_served = Event()
        self._processes: dict[int, subprocess.Popen] = {}
        self._slots = [SlotState() for _ in range(count)]

    def run(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> int:
        """Start the children, keep them running until a signal or :meth:`stop`; the exit status."""
        for signum in signals:
            gevent.signal_handler(signum, self._on_signal, signum)
        keepers = [gevent.spawn(self._keep, 0)]
        gevent.wait([self._first_served, self._stopping], count=1)
        if self._first_served.is_set() and not self._stopping.is_set():
            keepers += [gevent.spawn(self._keep, index) for index in range(1, self.count)]
        gevent.joinall(keepers, raise_error=True)
        return self.status

    def _on_signal(self, signum: int) -> None:
        if not self._stopping.is_set():
            log.info("signal %d: stopping the %d server process(es) gracefully", signum, len(self._processes))
        self.stop()

    def stop(self) -> None:
        """Stop every child gracefully (SIGTERM) and restart none."""
        self._stopping.set()
        for process in list(self._processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def _give_up(self, message: str) -> None:
        if not self._stopping.is_set():
            log.error("%s", message)
            self.status = EXIT_CANNOT_START
            self.stop()

    def _keep(self, index: int) -> None:
        """Run child ``index``, restarting it while not stopping."""
        while not self._stopping.is_set():
            pid, status, served, ran = self._run_child(index)
            what = f"process {index} (pid {pid}) {describe_status(status)}"
            if self._stopping.is_set():
                if status not in (0, -signal.SIGTERM, -signal.SIGINT):  # a signal may come before its handler
                    log.warning("%s while stopping", what)
                    self.status = self.status or 1
                break
            delay = after_exit(self.policy, self._slots[index], served, ran, self._first_served.is_set())
            if delay is None:
                self._give_up(f"{what} before it served: giving up (its error, if any, is above)")
                break
            log.error("%s after %.1f s; restarting it in %.1f s", what, ran, delay)
            self._stopping.wait(delay)

    def _run_child(self, index: int) -> tuple[int, int, bool, float]:
        """Run child ``index`` until it exits: its pid, exit status, whether it served, seconds it ran."""
        ours, theirs = socket.socketpair()
        environment = {
            **os.environ,
            PROCESS_VARIABLE: f"{index}/{self.count}",
            SUPERVISOR_FD_VARIABLE: str(theirs.fileno()),
        }
        started = time.monotonic()
        try:
            process = subprocess.Popen(list(self.command(index)), env=environment, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._processes[index] = process
        if self._stopping.is_set():  # a signal came while it started
            process.send_signal(signal.SIGTERM)
        log.info("process %d started (pid %d)", index, process.pid)
        try:
            served = ours.recv(1) == READY  # b"" once it exited (or closed its end)
            if served:
                self._first_served.set()
            status = process.wait()
        finally:
            ours.close()
            del self._processes[index]
        return process.pid, status, served, time.monotonic() - started


class Supervised:
    """A child's side of the supervisor's socket pair: says when the server serves, and calls ``on_orphaned``
    once the supervisor is gone."""

    def __init__(self, fd: int, on_orphaned: Callable[[], None]) -> None:
        self._socket = socket.socket(fileno=fd)
        self._watcher = gevent.spawn(self._watch, on_orphaned)

    def ready(self) -> None:
        self._socket.sendall(READY)

    def _watch(self, on_orphaned: Callable[[], None]) -> None:
        try:
            self._socket.recv(1)
        except OSError:
            pass
        on_orphaned()

    def close(self) -> None:
        self._watcher.kill(block=False)
        self._socket.close()


def supervised(on_orphaned: Callable[[], None]) -> Supervised | None:
    """In a child of the supervisor: its link with it (the variable is removed, so that processes this one
    starts do not take the descriptor for theirs). None in a process started otherwise."""
    fd = os.environ.pop(SUPERVISOR_FD_VARIABLE, None)
    if fd is None:
        return None
    return Supervised(int(fd), on_orphaned)


def process_label() -> str:
    """How log lines name this process: ``process 1/4 pid 1234``, or ``pid 1234`` when not supervised."""
    place = os.environ.get(PROCESS_VARIABLE)
    return f"process {place} pid {os.getpid()}" if place else f"pid {os.getpid()}"


def child_command(arguments: Sequence[str]) -> list[str]:
    """The command of a child: this Python running ``amphora`` with ``arguments``."""
    return [sys.executable, "-m", "amphora", *arguments]
