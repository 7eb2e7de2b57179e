"""FaultProxy: a TCP proxy between AMQP clients and a broker that breaks the network on demand.

Point clients and servers at the proxy instead of the broker, then make the network misbehave::

    from amphora.testing.faultproxy import FaultProxy

    proxy = FaultProxy("127.0.0.1", 5672)          # listens on 127.0.0.1, on a free port
    client = AmqpRpcClient("math", url=proxy.url_for("amqp://guest:guest@127.0.0.1:5672/%2F"))
    proxy.cut()                # every connection through the proxy is reset now; new ones are accepted
    proxy.stall(10)            # a blackhole for 10 s: sockets stay open, nothing gets through
    proxy.delay(0.2)           # 200 ms more latency in each direction
    proxy.refuse()             # new connections are refused (as if nothing listened) until accept()
    proxy.close()

What each fault looks like from the two ends:

``cut()``
    Every open connection is closed with a TCP reset on both sides, and bytes still inside the proxy are
    dropped: both peers see the connection fail at once, as when a load balancer or NAT box restarts.
``stall(seconds=None)`` / ``resume()``
    A blackhole. Connections stay open, new ones are accepted, but no byte moves in either direction
    (bytes already sent wait in the kernel's buffers, as unacknowledged TCP segments would). Only
    heartbeats can tell: a peer with heartbeats on declares the connection dead after missing them.
    ``resume()`` lets whatever waited through, as TCP retransmission would once the network heals, on the
    connections that both peers still hold open. With ``seconds`` the proxy resumes by itself.
``delay(seconds)``
    Every chunk read from either side is forwarded ``seconds`` after it arrived (added latency, in order,
    without limiting throughput). ``delay(0)`` removes it.
``refuse()`` / ``accept()``
    The proxy stops listening, so new connections are refused (``ECONNREFUSED``) as if the broker were
    down; open connections are left alone. Combine with ``cut()`` for a full outage.

The proxy runs in the calling process's gevent hub (its greenlets need the hub to run, as any gevent
code does) and listens on the loopback interface only. It is a testing tool: it copies bytes, it does not
parse AMQP.
"""

from __future__ import annotations

import logging
import socket as _stdlib_socket
import struct
import time
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import gevent
from gevent import socket
from gevent.event import Event
from gevent.queue import Queue

log = logging.getLogger(__name__)

LISTEN_HOST = "127.0.0.1"
CHUNK_SIZE = 65536
QUEUE_CHUNKS = 64
"""Chunks read but not yet written, per direction of a connection, before the proxy stops reading
(backpressure travels back to the sender through TCP)."""
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and drops unsent data


class FaultProxy:
    """Forwards TCP connections from ``127.0.0.1:port`` to ``target_host:target_port``, with faults.

    ``port`` 0 (the default) picks a free port; the proxy keeps it for its whole life, also across
    :meth:`refuse` and :meth:`accept`. The proxy starts listening at once. ``connect_timeout`` bounds how
    long it tries to reach the target for each new connection; if it cannot, it closes the client's
    connection, which the client sees as the broker dropping it during the handshake.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0, connect_timeout: float = 5.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self.accepted = 0
        """Connections accepted since the proxy started."""
        self._flowing = Event()
        self._flowing.set()
        self._delay = 0.0
        self._connections: set[_ProxiedConnection] = set()
        self._stall_timer: gevent.Greenlet | None = None
        self._listener: socket.socket | None = None
        self._acceptor: gevent.Greenlet | None = None
        self._closed = False
        self.port = port
        """The port the proxy listens on (chosen at creation when 0 was given)."""
        self.accept()

    # --- addresses -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the proxy listens on (always the loopback interface)."""
        return LISTEN_HOST

    def url_for(self, url: str) -> str:
        """``url`` (an ``amqp://`` URL of the target) rewritten to go through the proxy.

        User, password, virtual host and options are kept; only the host and port change. For ``amqps://``
        the client then checks the broker's certificate against ``127.0.0.1`` unless the URL names a
        ``server_hostname``.
        """
        parts = urlsplit(url)
        credentials, _, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}@{self.host}:{self.port}" if credentials else f"{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # --- state ---------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections open through the proxy right now."""
        return len(self._connections)

    @property
    def stalled(self) -> bool:
        """Whether bytes are held (between :meth:`stall` and :meth:`resume`)."""
        return not self._flowing.is_set()

    @property
    def refusing(self) -> bool:
        """Whether new connections are refused (between :meth:`refuse` and :meth:`accept`, or closed)."""
        return self._listener is None

    @property
    def latency(self) -> float:
        """The latency :meth:`delay` added, in seconds."""
        return self._delay

    # --- faults --------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection now (both peers see it fail); new connections are accepted."""
        for connection in list(self._connections):
            connection.close(reset=True)

    def stall(self, seconds: float | None = None) -> None:
        """Stop moving bytes, keeping every connection open; with ``seconds``, resume after that long."""
        self._cancel_stall_timer()
        self._flowing.clear()
        if seconds is not None:
            self._stall_timer = gevent.spawn_later(seconds, self.resume)

    def resume(self) -> None:
        """End a stall: bytes flow again on the connections still open."""
        self._cancel_stall_timer()
        self._flowing.set()

    def delay(self, seconds: float) -> None:
        """Forward every chunk, in each direction, ``seconds`` after it arrived (0: no added latency)."""
        if seconds < 0:
            raise ValueError(f"delay must be 0 or more seconds, not {seconds}")
        self._delay = float(seconds)

    def refuse(self) -> None:
        """Stop listening: new connections are refused until :meth:`accept`. Open ones go on."""
        if self._acceptor is not None:
            self._acceptor.kill()
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def accept(self) -> None:
        """Listen (again) on the proxy's port: new connections are accepted."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((LISTEN_HOST, self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(128)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._acceptor = gevent.spawn(self._accept_loop, listener)

    def close(self) -> None:
        """Stop listening and reset every connection. The proxy cannot be used again."""
        self._closed = True
        self.refuse()
        self.cut()
        self.resume()

    # --- internals -----------------------------------------------------------------------------

    def _cancel_stall_timer(self) -> None:
        timer, self._stall_timer = self._stall_timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # the listener was closed (refuse or close)
            self.accepted += 1
            connection = _ProxiedConnection(self, downstream)
            self._connections.add(connection)
            connection.start()

    def _forget(self, connection: _ProxiedConnection) -> None:
        self._connections.discard(connection)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "refusing" if self.refusing else "stalled" if self.stalled else "forwarding"
        return (
            f"<FaultProxy {self.host}:{self.port} -> {self.target_host}:{self.target_port} {state}"
            f" connections={self.connections} delay={self._delay}>"
        )


class _ProxiedConnection:
    """One client connection and its connection to the target: two directions, each a reader greenlet
    and a writer greenlet with a bounded queue of ``(forward_at, chunk)`` between them."""

    def __init__(self, proxy: FaultProxy, downstream: socket.socket) -> None:
        self._proxy = proxy
        self._downstream = downstream
        self._upstream: socket.socket | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._closed = False

    def start(self) -> None:
        self._greenlets.append(gevent.spawn(self._open))

    def _open(self) -> None:
        proxy = self._proxy
        _no_delay(self._downstream)
        proxy._flowing.wait()  # in a stall nothing reaches the target, not even a new connection
        try:
            upstream = socket.create_connection((proxy.target_host, proxy.target_port), timeout=proxy.connect_timeout)
        except OSError as exc:
            log.debug("proxy %s: cannot reach the target: %s", proxy.port, exc)
            self.close(reset=False)
            return
        upstream.settimeout(None)
        if self._closed:  # cut while connecting
            _reset(upstream)
            return
        self._upstream = upstream
        _no_delay(upstream)
        for source, target in ((self._downstream, upstream), (upstream, self._downstream)):
            chunks: Queue = Queue(QUEUE_CHUNKS)
            self._greenlets.append(gevent.spawn(self._read, source, chunks))
            self._greenlets.append(gevent.spawn(self._write, chunks, target))

    def _read(self, source: socket.socket, chunks: Queue) -> None:
        flowing = self._proxy._flowing
        try:
            while True:
                flowing.wait()
                data = source.recv(CHUNK_SIZE)
                chunks.put((time.monotonic() + self._proxy._delay, data))
                if not data:
                    return
        except OSError:
            self.close(reset=True)

    def _write(self, chunks: Queue, target: socket.socket) -> None:
        flowing = self._proxy._flowing
        try:
            while True:
                forward_at, data = chunks.get()
                wait = forward_at - time.monotonic()
                if wait > 0:
                    gevent.sleep(wait)
                flowing.wait()
                if not data:  # the peer closed its side: close both, after what it sent before
                    self.close(reset=False)
                    return
                target.sendall(data)
        except OSError:
            self.close(reset=True)

    def close(self, reset: bool) -> None:
        """Close both sockets (with a TCP reset if ``reset``) and stop the greenlets."""
        if self._closed:
            return
        self._closed = True
        self._proxy._forget(self)
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=False)
        for sock in (self._downstream, self._upstream):
            if sock is not None:
                if reset:
                    _reset(sock)
                else:
                    sock.close()


def _no_delay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Close with RST: the peer's next read or write fails at once, unsent bytes are dropped."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()
