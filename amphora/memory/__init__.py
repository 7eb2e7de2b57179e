"""An in-process AMQP broker for unit tests: ``url="memory://"`` (or ``memory://name`` for a broker of its own).

It keeps RabbitMQ's semantics that amphora relies on (direct, fanout, topic and headers exchanges, publisher
confirms and mandatory returns, prefetch, redelivery, message and queue TTL, dead-lettering with ``x-death``,
bounded queues, priorities, exclusive and auto-delete queues) behind the connection API of
:mod:`amphora.amqp`, so that real clients and servers talk to it in one process, without a network. It lives
in the process's memory: nothing persists, and other processes cannot reach it. See docs/testing.rst.
"""

from .broker import Broker
from .connection import MemoryChannel, MemoryConnection
from .node import MemoryNode, forget_node, memory_node

__all__ = ["Broker", "MemoryChannel", "MemoryConnection", "MemoryNode", "forget_node", "memory_node"]
