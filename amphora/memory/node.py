"""Named in-process brokers: ``memory://`` is the node ``default``, ``memory://name`` the node ``name``.

A :class:`MemoryNode` is a :class:`~amphora.memory.broker.Broker`, the greenlet that expires messages and
queues on time, and the connections open to it. Nodes live as long as the process, or until
:func:`forget_node`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ..amqp.errors import ConnectionClosed
from ..amqp.parameters import DEFAULT_MEMORY_BROKER
from .broker import Broker

if TYPE_CHECKING:
    from .connection import MemoryConnection

SHUTDOWN_TEXT = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


class MemoryNode:
    """One in-process broker and its open connections."""

    def __init__(self, name: str, broker: Broker | None = None) -> None:
        self.name = name
        self.broker = broker or Broker()
        self.connections: weakref.WeakSet[MemoryConnection] = weakref.WeakSet()
        self._wakeup = Event()
        self._timekeeper: gevent.Greenlet | None = None
        self.broker.on_schedule = self._schedule

    def close_connections(self, code: int = 320, text: str = SHUTDOWN_TEXT) -> None:
        """Close every connection as the broker would (320: shut down), so that clients and servers reconnect:
        for tests of what happens when the broker goes away. The broker keeps its queues and messages."""
        for connection in list(self.connections):
            connection.fail(ConnectionClosed(code, text))

    def restart(self) -> None:
        """Restart the broker as RabbitMQ restarts: every connection is closed (320), and only durable
        exchanges and queues and persistent messages remain. Clients and servers reconnect."""
        self.close_connections()
        self.broker.restart()

    def stop(self) -> None:
        """Close every connection and stop expiring messages."""
        self.close_connections()
        if self._timekeeper is not None:
            self._timekeeper.kill(block=False)
            self._timekeeper = None

    def _schedule(self) -> None:
        self._wakeup.set()
        if self._timekeeper is None:
            self._timekeeper = gevent.spawn(self._keep_time)

    def _keep_time(self) -> None:
        broker = self.broker
        while True:
            deadline = broker.next_deadline()
            self._wakeup.wait(None if deadline is None else max(0.0, deadline - broker.clock()))
            self._wakeup.clear()
            broker.expire()

    def __repr__(self) -> str:
        return f"<MemoryNode {self.name!r} {len(self.broker.queues)} queues>"


_nodes: dict[str, MemoryNode] = {}


def memory_node(name: str = DEFAULT_MEMORY_BROKER) -> MemoryNode:
    """The node named ``name``, made on first use."""
    node = _nodes.get(name)
    if node is None:
        node = _nodes[name] = MemoryNode(name)
    return node


def forget_node(name: str) -> None:
    """Stop the node named ``name`` (closing its connections) and drop it with everything it held."""
    node = _nodes.pop(name, None)
    if node is not None:
        node.stop()
