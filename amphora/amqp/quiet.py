"""QuietReads: while asked to, the kernel does not wake a connection's reader for each small frame.

A publishing connection receives little but publisher confirms, one small frame per message. Waking the
process for each cost about 25 us of CPU per call on each side of ``bench.rpc``'s W1, and on a busy machine
it delays whatever else runs. While *held*, the socket's receive low-water mark (``SO_RCVLOWAT``) is raised,
so the reader wakes only once that many bytes wait, when the hold is released, when the broker closes the
socket, or at the latest ``MAX_DELAY`` seconds after the hold began. Whoever waits for an answer (a
synchronous method, a caller blocked on a confirm) releases the hold first.

Linux only (5.0 and later wake the reader when the mark is lowered); elsewhere, and on TLS connections,
every frame wakes the reader as before.
"""

from __future__ import annotations

import contextlib
import platform
import socket
import sys
from collections.abc import Iterator
from typing import Any

import gevent

MAX_DELAY = 0.01
"""Seconds a held frame may wait before the reader wakes for it anyway."""
HELD_LOW_WATER = 65536
"""Bytes that wake the reader while held: far more than the confirms of a held window."""


def kernel_supports_quiet_reads() -> bool:
    """True where lowering the low-water mark wakes a reader whose data already waits."""
    if sys.platform != "linux" or not hasattr(socket, "SO_RCVLOWAT"):
        return False
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 0)


class QuietReads:
    """Holds back the reader's wake-ups on one plain socket (see the module docstring); with no socket, or
    where the kernel cannot, every method but :meth:`awaiting_answer` does nothing."""

    def __init__(self, sock: socket.socket | None = None, max_delay: float | None = None) -> None:
        self._sock = sock if sock is not None and kernel_supports_quiet_reads() else None
        self.max_delay = MAX_DELAY if max_delay is None else max_delay
        """Seconds a hold lasts at most."""
        self._release_timer: Any = None  # set while held
        self._answers_awaited = 0
        self._waiting_now: set[object] = set()  # whoever sharing the connection wants every frame at once
        self.read_since_release = True
        """Set by the reader after each read: a hold waits for one, so a release is not undone unread."""

    @property
    def held(self) -> bool:
        return self._release_timer is not None

    def hold(self) -> None:
        """Hold back wake-ups for small frames, for at most ``max_delay`` seconds (a no-op if already held,
        while an answer is awaited, or before the reader has read what the last release let through)."""
        if self._release_timer is not None or self._answers_awaited or self._waiting_now or not self.read_since_release:
            return
        if self._sock is not None and self._set_low_water(HELD_LOW_WATER):
            # a new timer each time: gevent's libev timer, started again after it fired, fires at once
            self._release_timer = gevent.get_hub().loop.timer(self.max_delay)
            self._release_timer.start(self.release)

    def release(self) -> None:
        """Wake the reader for every frame again, at once for those already waiting."""
        if self._release_timer is None:
            return
        self._release_timer.stop()
        self._release_timer = None
        self.read_since_release = False
        self._set_low_water(1)

    def wait_for_every_frame(self, who: object) -> None:
        """Release, and hold no more until ``who`` says :meth:`may_wait` (or holds itself): whoever shares the
        connection, ``who``'s frames (a server's confirms it acknowledges requests on) are read at once."""
        self._waiting_now.add(who)
        self.release()

    def may_wait(self, who: object) -> None:
        """``who`` no longer needs every frame at once."""
        self._waiting_now.discard(who)

    @contextlib.contextmanager
    def awaiting_answer(self) -> Iterator[None]:
        """No hold while the caller waits for an answer from the broker."""
        self._answers_awaited += 1
        self.release()
        try:
            yield
        finally:
            self._answers_awaited -= 1

    def close(self) -> None:
        """The socket is closed: hold no more."""
        self._sock = None
        self.release()

    def _set_low_water(self, size: int) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
        except OSError:  # the socket is closing: the reader finds out
            return False
        return True
