"""Connections shared by the links of one process (one gevent hub) to the same broker.

Every client and server stands on two links (:mod:`amphora.transport`), one consuming and one publishing.
Were each to open a connection of its own, a process with a thousand clients would hold two thousand
sockets, past what a broker allows by default. Instead the links of one hub that go to the same broker with
the same role share a connection: at most :data:`LINKS_PER_CONNECTION` links a connection, so the
connections are bounded by the links divided by that. Consuming and publishing stay on different
connections, as RabbitMQ advises (a publisher the broker throttles must not hold up deliveries).

The links of a connection also share its *main channel* (:meth:`SharedConnections.lease_channel`; in confirm
mode on a publishing connection), so that the publishes, confirms, deliveries and acks of many links go out in
few frames on one channel, which costs the broker and both sides far less per message than a channel each.
Every link keeps its own confirms (one a message) and consumers (each with its own prefetch).

A connection lives while one link leases it, its main channel while one link uses it. What happens to either
happens to every link on it: a lost connection or main channel, a heartbeat missed, or the broker blocking
publication (``connection.blocked``) reach them all.
"""

from __future__ import annotations

import enum
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.lock import Semaphore

from .amqp import Channel, Connection, ConnectionParameters, open_connection
from .amqp.errors import AMQPError

LINKS_PER_CONNECTION = 64
"""Links at most on one shared connection (each may keep a few channels of its own for operations)."""
CLOSE_TIMEOUT = 2.0
"""Seconds the last link to give a connection back waits for the broker to confirm it closed."""


class Role(enum.Enum):
    """What a link does on its connection: links of different roles never share one."""

    CONSUME = "consume"
    PUBLISH = "publish"


LostHook = Callable[[BaseException | None], None]


@dataclass(eq=False)
class _MainChannel:
    """A connection's main channel and the links on it, each with what tells it the channel ended."""

    channel: Channel
    users: dict[object, LostHook] = field(default_factory=dict)

    def on_close(self, error: BaseException | None) -> None:
        for lost in list(self.users.values()):
            lost(error)


@dataclass(eq=False)
class _Shared:
    connection: Connection
    role: Role
    leases: int = 0
    full: bool = False
    main: _MainChannel | None = None
    opening_main: Semaphore = field(default_factory=Semaphore)


@dataclass
class _Broker:
    """The shared connections to one broker for one role, and the lock that lets one link open at a time."""

    opening: Semaphore = field(default_factory=Semaphore)
    connections: list[_Shared] = field(default_factory=list)
    failure: AMQPError | None = None
    failed_at: float = 0.0


OpenConnection = Callable[[ConnectionParameters], Connection]


class SharedConnections:
    """The connections of one hub, leased to links by broker and role (see the module docstring)."""

    def __init__(self, limit: int = LINKS_PER_CONNECTION, open: OpenConnection = open_connection) -> None:
        self.limit = limit
        self._open = open
        self._brokers: dict[tuple[Any, ...], _Broker] = {}
        self._leased: dict[Connection, _Shared] = {}

    def lease(self, parameters: ConnectionParameters, role: Role) -> Connection:
        """An open connection to ``parameters``' broker for ``role``: one with room, or a new one (opened by
        one link at a time: the others wait and share it). Raises what opening raises; links that waited for
        an attempt that failed get its error too, rather than each waiting for an attempt of its own."""
        broker = self._brokers.setdefault((parameters, id(parameters.ssl_context), role), _Broker())
        asked = time.monotonic()
        with broker.opening:
            broker.connections = [s for s in broker.connections if s.connection.is_open]
            # none that no link leases: its last link is closing it
            shared = next((s for s in broker.connections if not s.full and 0 < s.leases < self.limit), None)
            if shared is None:
                if broker.failure is not None and broker.failed_at >= asked:
                    raise broker.failure  # the attempt this link waited for failed: not one more wait in turn
                try:
                    shared = _Shared(self._open(parameters), role)
                except AMQPError as exc:
                    broker.failure, broker.failed_at = exc, time.monotonic()
                    raise
                broker.connections.append(shared)
                self._leased[shared.connection] = shared
            shared.leases += 1
            return shared.connection

    def lease_channel(self, connection: Connection, user: object, lost: LostHook) -> Channel:
        """The main channel of a leased ``connection``, for ``user`` until :meth:`release_channel`: opened by the
        first user (one at a time: the others wait and share it; in confirm mode on a publishing connection),
        and again by the next one once it ended. ``lost(error)`` runs when it ends while ``user`` is on it.
        Raises what opening a channel raises."""
        shared = self._leased[connection]
        with shared.opening_main:
            main = shared.main
            if main is None or not main.channel.is_open:
                main = _MainChannel(connection.channel())
                main.channel.add_close_callback(main.on_close)
                if shared.role is Role.PUBLISH:
                    main.channel.confirm_select()
                shared.main = main
            main.users[user] = lost
            return main.channel

    def release_channel(self, connection: Connection, user: object) -> None:
        """``user`` is done with the main channel of ``connection``: closed once nobody uses it (a no-op if
        ``user`` is not on it, e.g. it ended and another replaced it)."""
        shared = self._leased.get(connection)
        main = shared.main if shared is not None else None
        if shared is None or main is None or main.users.pop(user, None) is None or main.users:
            return
        shared.main = None
        try:
            main.channel.close()
        except AMQPError:  # it ended meanwhile
            pass

    def full(self, connection: Connection) -> None:
        """Lease no more links ``connection``: it has no channel left for one."""
        shared = self._leased.get(connection)
        if shared is not None:
            shared.full = True

    def release(self, connection: Connection) -> None:
        """A link is done with ``connection``: closed once no link leases it."""
        shared = self._leased.get(connection)
        if shared is None:
            return
        shared.leases -= 1
        if shared.leases <= 0:
            del self._leased[connection]
            connection.close(CLOSE_TIMEOUT)


_per_hub: weakref.WeakKeyDictionary[Any, SharedConnections] = weakref.WeakKeyDictionary()


def shared_connections() -> SharedConnections:
    """The shared connections of the calling thread's gevent hub."""
    hub = gevent.get_hub()
    connections = _per_hub.get(hub)
    if connections is None:
        connections = _per_hub[hub] = SharedConnections()
    return connections
