"""One AMQP connection over a gevent socket.

A connection owns three greenlets: the reader (parses frames and dispatches them to channels; it also
notices silence), the writer (:mod:`amphora.amqp.writer`: sends what the hub could not send at once) and the
heartbeat ticker.
Nothing else reads or writes the socket (:mod:`amphora.amqp.quiet` only sets its receive low-water mark).
When the socket dies, every waiter on the connection and its channels gets the error at once.
"""

from __future__ import annotations

import collections
import itertools
import logging
import platform
import select
import socket as _stdlib_socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Self, cast

import gevent
from gevent import socket
from gevent.event import AsyncResult
from gevent.monkey import get_original
from pamqp import commands
from pamqp.common import FieldTable

from . import frames
from .channel import Channel
from .errors import (
    AMQPError,
    AuthenticationError,
    BrokerUnreachable,
    ChannelLimitReached,
    ConnectionClosed,
    ConnectionLost,
    ConnectionTimeout,
    ProtocolError,
    TLSError,
    connection_error,
)
from .errors import ConnectionError as AMQPConnectionError
from .parameters import ConnectionParameters
from .quiet import QuietReads
from .writer import FrameWriter

log = logging.getLogger(__name__)

SILENT_TICKS_LIMIT = 4
"""Heartbeat ticks (half intervals) without a byte from the broker before the connection counts as lost."""
STALL = 0.75
"""Heartbeat intervals after the last tick from which the process counts as stalled (ticks come every half)."""
_poll = get_original("select", "poll")  # never the cooperative one: a stall check must not yield
_PEER_CLOSED = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR

CLIENT_CAPABILITIES: FieldTable = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}

CloseCallback = Callable[[BaseException | None], None]


def connect(url: str = "amqp://guest:guest@127.0.0.1:5672/%2F", **options: Any) -> Connection:
    """Open a connection to the broker at ``url``; keyword options override what the URL says."""
    return open_connection(ConnectionParameters.from_url(url, **options))


def open_connection(parameters: ConnectionParameters) -> Connection:
    """Open a connection: over the network, or for a ``memory://`` URL to the in-process broker it names (a
    :class:`amphora.memory.MemoryConnection`, which offers the same API)."""
    if parameters.memory:
        from ..memory import MemoryConnection  # amphora.memory builds on this package: imported when used

        return cast(Connection, MemoryConnection(parameters).open())
    return Connection(parameters).open()


READ_SIZE = 262144
"""Bytes read from the socket at most at once, into a buffer that the connection reuses for every read. (Reading
into a new buffer each time cost a 64 KiB call ~30 page faults on the server: glibc handed the memory back to
the kernel between reads.)"""


class Connection:
    """An AMQP 0-9-1 connection: handshake, channels, heartbeats, flow control and failure reporting."""

    def __init__(self, parameters: ConnectionParameters) -> None:
        self.parameters = parameters
        self.server_properties: dict[str, Any] = {}
        self.frame_max = parameters.frame_max
        self.channel_max = parameters.channel_max
        self.heartbeat = parameters.heartbeat
        self.blocked = False
        self._sock: socket.socket | None = None
        self._reader = frames.FrameReader(frames.MIN_FRAME_MAX * 32)
        self._handshake_frames: collections.deque[frames.DecodedFrame] = collections.deque()
        self._channels: dict[int, Channel] = {}
        self._writer = FrameWriter(self._on_write_error)
        self.send = self._writer.send
        """``send(*frames)``: queue whole frames for the writer; never yields, so a message's frames stay
        together. Raises why the connection ended, once it has."""
        self._raw_socket: _stdlib_socket.socket | None = None  # the plain socket's own, non-blocking
        self.reads = QuietReads()
        """Holds back the reader's wake-ups for publisher confirms, when asked to (:mod:`amphora.amqp.quiet`)."""
        self._received_since_tick = False
        self._ticked_at = 0.0
        self._greenlets: list[gevent.Greenlet] = []
        self._error: BaseException | None = None
        self._close_ok = AsyncResult()
        self._close_callbacks: list[CloseCallback] = []
        self._blocked_callbacks: list[Callable[[str], None]] = []
        self._unblocked_callbacks: list[Callable[[], None]] = []
        self._consumer_tags = itertools.count(1)

    # --- opening -------------------------------------------------------------------------------

    def open(self) -> Connection:
        """Connect and complete the handshake within the connection timeout; raise a typed error if not."""
        timeout = self.parameters.connection_timeout
        try:
            with gevent.Timeout(timeout, ConnectionTimeout(f"no answer from {self.parameters.url} in {timeout} s")):
                self._sock = self._connect_socket()
                try:
                    self._handshake()
                except ssl.SSLError as exc:  # with TLS 1.3, a refused client certificate shows only now
                    raise TLSError(
                        f"the broker at {self.parameters.url} ended TLS after the handshake"
                        f" (did it refuse our client certificate?): {exc}"
                    ) from None
                except OSError as exc:
                    raise ConnectionLost(f"the connection to {self.parameters.url} failed: {exc}") from None
        except BaseException:
            if self._sock is not None:
                self._sock.close()
            self._error = ConnectionClosed(0, "the connection was never opened")
            raise
        self._reader.frame_max = self.frame_max
        raw = getattr(self._sock, "_sock", None)  # gevent's plain socket wraps a non-blocking one; TLS does not
        if not self.parameters.tls and raw is not None:
            self._raw_socket = raw
            self.reads = QuietReads(raw)
        self._greenlets = [gevent.spawn(self._read_loop), self._writer.start(self._sock, self._raw_socket)]
        if self.heartbeat:
            self._ticked_at = time.monotonic()
            self._greenlets.append(gevent.spawn(self._heartbeat_loop))
        log.debug("connected to %s (frame_max=%d heartbeat=%d)", self.parameters.url, self.frame_max, self.heartbeat)
        return self

    def _connect_socket(self) -> socket.socket:
        params = self.parameters
        try:
            sock = socket.create_connection((params.host, params.port))
        except OSError as exc:
            raise BrokerUnreachable(f"cannot reach the broker at {params.url}: {exc.strerror or exc}") from None
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
        if not params.tls:
            return sock
        try:
            return params.make_ssl_context().wrap_socket(sock, server_hostname=params.server_hostname or params.host)
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            sock.close()
            raise TLSError(f"TLS handshake with {params.url} failed: {exc}") from None

    def _handshake(self) -> None:
        params = self.parameters
        assert self._sock is not None
        self._sock.sendall(frames.PROTOCOL_HEADER)
        start = self._expect(commands.Connection.Start, "before the handshake")
        self.server_properties = dict(start.server_properties or {})
        if "PLAIN" not in str(start.mechanisms).split():
            raise AMQPConnectionError(f"the broker does not offer PLAIN authentication ({start.mechanisms})")
        self._send_now(
            commands.Connection.StartOk(
                client_properties={
                    "product": "amphora",
                    "platform": f"Python {platform.python_version()}",
                    "capabilities": CLIENT_CAPABILITIES,
                },
                mechanism="PLAIN",
                response=f"\0{params.user}\0{params.password}",
                locale="en_US",
            )
        )
        tune = self._expect(commands.Connection.Tune, "after authentication", eof_error=AuthenticationError)
        self.channel_max = _negotiate(params.channel_max, tune.channel_max)
        self.frame_max = _negotiate(params.frame_max, tune.frame_max)
        self.heartbeat = 0 if params.heartbeat == 0 else _negotiate(params.heartbeat, tune.heartbeat)
        self._send_now(commands.Connection.TuneOk(self.channel_max, self.frame_max, self.heartbeat))
        self._send_now(commands.Connection.Open(virtual_host=params.vhost))
        self._expect(commands.Connection.OpenOk, "on opening the virtual host")

    def _send_now(self, method: Any) -> None:
        assert self._sock is not None
        self._sock.sendall(frames.method_frame(0, method))

    def _expect(self, method_class: type, stage: str, eof_error: type[AMQPError] = ConnectionLost) -> Any:
        """The next handshake frame, which must be a ``method_class`` (a Connection.Close is raised typed)."""
        assert self._sock is not None
        while not self._handshake_frames:
            data = self._sock.recv(65536)
            if not data:
                raise eof_error(f"the broker at {self.parameters.url} closed the connection {stage}")
            self._handshake_frames.extend(self._reader.feed(data))
        channel, _, payload = self._handshake_frames.popleft()
        if isinstance(payload, commands.Connection.Close):
            self._send_now(commands.Connection.CloseOk())
            raise connection_error(cast(int, payload.reply_code), f"{payload.reply_text} ({self.parameters.url})")
        if channel != 0 or not isinstance(payload, method_class):
            raise ProtocolError(f"expected {method_class.__name__} {stage}, got {payload!r}")
        return payload

    # --- channels ------------------------------------------------------------------------------

    def channel(self) -> Channel:
        """Open a new channel; ChannelLimitReached if all ``channel_max`` are open."""
        self._raise_if_closed()
        channel_id = next((i for i in range(1, self.channel_max + 1) if i not in self._channels), None)
        if channel_id is None:
            raise ChannelLimitReached(f"all {self.channel_max} channels are in use")
        channel = Channel(self, channel_id)
        self._channels[channel_id] = channel
        try:
            channel.open()
        except BaseException:
            self._channels.pop(channel_id, None)
            raise
        return channel

    def forget_channel(self, channel_id: int) -> None:
        """Free a closed channel's number. Called by the channel."""
        self._channels.pop(channel_id, None)

    def new_consumer_tag(self) -> str:
        """A consumer tag unique on this connection."""
        return f"amphora.{next(self._consumer_tags)}"

    # --- writing -------------------------------------------------------------------------------

    def wait_writable(self) -> None:
        """Block while the write backlog is over its limit (the broker is slow, blocked or gone)."""
        self._writer.wait_writable()

    def drain(self, timeout: float | None = None) -> bool:
        """Block until every frame queued so far was handed to the socket; False if ``timeout`` passed first
        or the connection ended."""
        return self._writer.drain(timeout)

    @property
    def write_backlog(self) -> int:
        """Bytes queued and not yet handed to the socket."""
        return self._writer.backlog

    def _on_write_error(self, exc: OSError) -> None:
        self._fail(ConnectionLost(f"writing to {self.parameters.url} failed: {exc}"))

    # --- reading -------------------------------------------------------------------------------

    def hold_reads(self, holder: object) -> None:
        """``holder`` (one of those publishing on the connection) lets small frames such as publisher confirms
        wait, at most ``reads.max_delay``, instead of waking the reader for each: they do, unless another
        holder waits for every frame (:meth:`release_reads`). See :mod:`amphora.amqp.quiet`."""
        self.reads.may_wait(holder)
        self.reads.hold()

    def release_reads(self, holder: object) -> None:
        """Wake the reader for every frame again, at once for those already waiting, until ``holder`` holds
        again or says :meth:`reads_may_wait`."""
        self.reads.wait_for_every_frame(holder)

    def reads_may_wait(self, holder: object) -> None:
        """``holder`` no longer needs every frame at once (it holds nothing either)."""
        self.reads.may_wait(holder)

    def _read_loop(self) -> None:
        assert self._sock is not None
        recv = self._receiver()
        feed = self._reader.feed
        reads = self.reads
        try:
            pending = list(self._handshake_frames)
            self._handshake_frames.clear()
            self._dispatch(pending)
            while True:
                data = recv()
                if not data:
                    raise ConnectionLost(f"the broker at {self.parameters.url} closed the socket")
                self._received_since_tick = True
                reads.read_since_release = True
                self._dispatch(feed(data))
        except OSError as exc:
            self._fail(ConnectionLost(f"reading from {self.parameters.url} failed: {exc}"))
        except AMQPConnectionError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug in a frame handler must not leave waiters hanging
            log.exception("failed to handle a frame from %s", self.parameters.url)
            self._fail(ProtocolError(f"failed to handle a frame: {exc!r}"))

    def _receiver(self) -> Callable[[], memoryview]:
        """A function returning the next bytes from the socket, waiting for them cooperatively: a view of the
        connection's read buffer, valid until the next call.

        On a plain socket, after a read that did not fill the buffer it waits for the socket to be readable
        before reading again: gevent's ``recv_into`` would first try, and fail with EAGAIN, once per wake-up."""
        sock = self._sock
        assert sock is not None
        buffer = memoryview(bytearray(READ_SIZE))
        raw, wait, readable = self._raw_socket, getattr(sock, "_wait", None), getattr(sock, "_read_event", None)
        if raw is None or wait is None or readable is None:
            recv_into = sock.recv_into
            return lambda: buffer[: recv_into(buffer)]
        raw_recv_into = raw.recv_into
        drained = False

        def recv() -> memoryview:
            nonlocal drained
            while True:
                if drained:
                    wait(readable)
                try:
                    count = raw_recv_into(buffer)
                except BlockingIOError:
                    drained = True
                    continue
                drained = count < READ_SIZE
                return buffer[:count]

        return recv

    def _dispatch(self, decoded: list[frames.DecodedFrame]) -> None:
        channels = self._channels
        for channel_id, frame_type, payload in decoded:
            if channel_id == 0:
                self._on_connection_frame(payload)
            else:
                channel = channels.get(channel_id)
                if channel is not None:
                    channel.on_frame(frame_type, payload)

    def _on_connection_frame(self, payload: frames.Payload) -> None:
        if payload is None:  # heartbeat
            return
        if isinstance(payload, commands.Connection.Close):
            self._send_quietly(frames.method_frame(0, commands.Connection.CloseOk()))
            raise connection_error(cast(int, payload.reply_code), str(payload.reply_text))
        if isinstance(payload, commands.Connection.CloseOk):
            self._close_ok.set(None)
        elif isinstance(payload, commands.Connection.Blocked):
            self.blocked = True
            log.warning("the broker blocked publishing on %s: %s", self.parameters.url, payload.reason)
            self._notify(self._blocked_callbacks, str(payload.reason))
        elif isinstance(payload, commands.Connection.Unblocked):
            self.blocked = False
            log.info("the broker unblocked publishing on %s", self.parameters.url)
            self._notify(self._unblocked_callbacks)
        else:
            raise ProtocolError(f"unexpected frame on channel 0: {payload!r}")

    def _send_quietly(self, data: bytes) -> None:
        """A last frame, written directly: used when the connection is ending anyway."""
        try:
            assert self._sock is not None
            self._sock.sendall(data)
        except OSError:
            pass

    # --- heartbeats ----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.heartbeat / 2
        silent_ticks = 0
        while self._error is None:
            gevent.sleep(interval)
            self.check_stall()
            if self._error is not None:
                return
            self._ticked_at = time.monotonic()
            if not self._writer.sent_since_tick:
                self._writer.send(frames.HEARTBEAT)
            self._writer.sent_since_tick = False
            silent_ticks = 0 if self._received_since_tick else silent_ticks + 1
            self._received_since_tick = False
            if silent_ticks >= SILENT_TICKS_LIMIT:
                self._fail(
                    ConnectionLost(f"no heartbeat from {self.parameters.url} for {silent_ticks * interval:.1f} s")
                )

    def check_stall(self) -> None:
        """End the connection at once if the process stalled and the broker closed the socket meanwhile.

        A handler that blocks the whole process (a sleep that does not yield, a long computation) longer than
        the heartbeat makes the broker close the connection and give its unacknowledged deliveries to other
        consumers; until the reader runs again, the connection still looks open. This notices it without
        yielding: after a late heartbeat tick it polls the socket for the broker's close (a syscall); when
        the ticks are on time it only reads the clock.
        """
        if not self.heartbeat or self._error is not None or self._sock is None:
            return
        stalled = time.monotonic() - self._ticked_at
        if stalled < self.heartbeat * STALL or not self._peer_closed():
            return
        self._fail(
            ConnectionLost(
                f"the broker at {self.parameters.url} closed the connection while this process did not run for"
                f" {stalled:.1f} s, longer than the heartbeat ({self.heartbeat} s): did a handler block it?"
            )
        )

    def _peer_closed(self) -> bool:
        assert self._sock is not None
        poll = _poll()
        try:
            poll.register(self._sock.fileno(), _PEER_CLOSED)
        except (OSError, ValueError):  # closed under us
            return True
        return bool(poll.poll(0))

    # --- closing and failure -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._error is None and self._sock is not None

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection politely (waiting up to ``timeout`` for the broker's answer)."""
        if self._error is not None:
            return
        for channel in list(self._channels.values()):
            channel.flush_acks()  # acks still gathered would come after our Close: the broker would drop them
        try:
            with self.reads.awaiting_answer():
                self.send(frames.method_frame(0, commands.Connection.Close(200, "Normal shutdown", 0, 0)))
                self._close_ok.wait(timeout)
        except AMQPError:
            pass
        self._fail(ConnectionClosed(200, "closed by the client"), clean=True)

    def add_close_callback(self, callback: CloseCallback) -> None:
        """Call ``callback(error)`` when the connection ends; ``error`` is None when we closed it."""
        self._close_callbacks.append(callback)

    def add_blocked_callback(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the broker blocks publishing (memory or disk alarm)."""
        self._blocked_callbacks.append(callback)

    def add_unblocked_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the broker unblocks publishing."""
        self._unblocked_callbacks.append(callback)

    def _raise_if_closed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._sock is None:
            raise AMQPConnectionError("the connection is not open yet: call open()")

    def _fail(self, error: BaseException, clean: bool = False) -> None:
        """End the connection: every waiter on it and its channels gets ``error``."""
        if self._error is not None:
            return
        self._error = error
        if not clean:
            log.warning("connection to %s lost: %s", self.parameters.url, error)
        self.reads.close()
        if self._sock is not None:
            self._sock.close()
        self._writer.close(error)
        for channel in list(self._channels.values()):
            channel.fail(error)
        self._channels.clear()
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=False)
        self._notify(self._close_callbacks, None if clean else error)

    @staticmethod
    def _notify(callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:
                log.exception("connection callback %r failed", callback)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<Connection {self.parameters.url} {state}>"


def _negotiate(ours: int, theirs: int) -> int:
    """The smaller of two limits, where 0 means 'no limit'."""
    if not ours or not theirs:
        return ours or theirs
    return min(ours, theirs)
