"""FrameWriter: a connection's outgoing frames, queued without yielding and written in as few sends as possible.

Frames queued during one loop iteration go out together at its end, in one send from the hub when the socket
takes them all (no switch to another greenlet). What the socket does not take, the writer greenlet sends,
waiting for the socket. A publisher waits while more than ``WRITE_BACKLOG_LIMIT`` bytes are queued.
"""

from __future__ import annotations

import socket as _stdlib_socket
import time
from collections.abc import Callable

import gevent
from gevent import socket
from gevent.event import Event

from . import frames

WRITE_BACKLOG_LIMIT = 4 * 1024 * 1024
"""Bytes queued for the writer beyond which publishers wait (backpressure)."""
SCATTER_MIN_SIZE = 65536
"""Batches from this many bytes up are written from their own buffers (``sendmsg``) rather than joined."""
SCATTER_MAX_BUFFERS = 64


def _joined(chunks: list[frames.Buffer]) -> memoryview:
    return memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))


def _unsent(chunks: list[frames.Buffer], sent: int) -> list[frames.Buffer]:
    """What is left of ``chunks`` once their first ``sent`` bytes are written."""
    for index, chunk in enumerate(chunks):
        if sent < len(chunk):
            return [memoryview(chunk)[sent:], *chunks[index + 1 :]]
        sent -= len(chunk)
    return []


class FrameWriter:
    """Writes the frames of one connection to its socket; ``on_error(exc)`` is told when a write fails."""

    def __init__(self, on_error: Callable[[OSError], None]) -> None:
        self._on_error = on_error
        self._sock: socket.socket | None = None
        self._raw: _stdlib_socket.socket | None = None  # the plain socket's own, non-blocking (not with TLS)
        self._chunks: list[frames.Buffer] = []
        self._size = 0
        self._wakeup = Event()
        self._flush_scheduled = False
        self._busy = False  # the writer greenlet is sending (and may wait for the socket)
        self._drained = Event()
        self._drained.set()
        self._error: BaseException | None = None
        self.sent_since_tick = False
        """Set by every send; the connection's heartbeat ticker clears it."""

    def start(self, sock: socket.socket, raw: _stdlib_socket.socket | None) -> gevent.Greenlet:
        """Write to ``sock`` from now on (from the hub through ``raw`` when given); returns the writer
        greenlet, which the connection kills when it ends."""
        self._sock, self._raw = sock, raw
        return gevent.spawn(self._write_loop)

    def send(self, *data: frames.Buffer) -> None:
        """Queue whole frames; never yields, so a message's frames stay together. Raises why the connection
        ended, once it has."""
        if self._error is not None:
            raise self._error
        self.sent_since_tick = True
        self._chunks += data
        for chunk in data:
            self._size += len(chunk)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            gevent.get_hub().loop.run_callback(self._flush)

    @property
    def backlog(self) -> int:
        """Bytes queued and not yet handed to the socket."""
        return self._size

    def wait_writable(self) -> None:
        """Block while the backlog is over its limit (the broker is slow, blocked or gone)."""
        while self._size > WRITE_BACKLOG_LIMIT and self._error is None:
            self._drained.clear()
            self._drained.wait()
        if self._error is not None:
            raise self._error

    def drain(self, timeout: float | None = None) -> bool:
        """Block until every frame queued was handed to the socket; False if ``timeout`` passed first or the
        connection ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (self._size or self._busy) and self._error is None:
            self._drained.clear()
            if not self._drained.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return False
        return self._error is None

    def close(self, error: BaseException) -> None:
        """The connection ended with ``error``: write nothing more, and let whoever waits for room go on."""
        self._error = error
        self._drained.set()

    def _flush(self) -> None:
        """Write what was queued during this loop iteration, in one send from the hub when the socket takes
        it all; the writer greenlet sends the rest. A large batch goes out with ``sendmsg`` straight from its
        buffers (a 64 KiB body is not copied)."""
        self._flush_scheduled = False
        raw = self._raw
        if self._busy or raw is None or self._error is not None:
            self._wakeup.set()
            return
        size = self._size
        chunks = self._detach_chunks()
        if not size:
            return
        try:
            if size >= SCATTER_MIN_SIZE and 1 < len(chunks) <= SCATTER_MAX_BUFFERS:
                sent = raw.sendmsg(chunks)
            else:
                chunks = [_joined(chunks)]
                sent = raw.send(chunks[0])
        except OSError:  # full (EAGAIN), or broken: the writer waits, or meets the error and reports it
            sent = 0
        if sent < size:
            self._chunks[:0] = _unsent(chunks, sent)
            self._size += size - sent
            self._wakeup.set()

    def _detach_chunks(self) -> list[frames.Buffer]:
        """Everything queued; the queue is empty after."""
        chunks = self._chunks
        self._chunks = []
        self._size = 0
        self._drained.set()
        return chunks

    def _write_loop(self) -> None:
        assert self._sock is not None
        send = self._sock.send  # not sendall: gevent's asks the socket its buffer size on every call
        try:
            while True:
                self._wakeup.wait()
                self._wakeup.clear()
                self._busy = True
                while self._chunks:
                    data = _joined(self._detach_chunks())
                    while data:
                        data = data[send(data) :]
                self._busy = False
                self._drained.set()  # for drain()
        except OSError as exc:
            self._on_error(exc)
