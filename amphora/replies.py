"""The reply queue that the clients of one process (one gevent hub) share.

A queue and a consumer per client would make every reply the only message in its queue: the broker then
works, and writes to disk, for each reply alone, and each client reads its replies on a channel of its own.
Instead, the clients of one hub that go to the same broker with the same reply queue settings share one
durable queue, ``rpc_replies_{id}``. Each client binds it to its service's reply exchange with its uuid (its
replies) and to its service's dead-letter exchange on its ``amphora-client`` header (its expired requests),
as it bound its own queue before; the wire protocol does not change. Deliveries go to the client they were
routed for, found by exchange and uuid, and are acknowledged once it had them.

A client given a fixed ``uuid`` has a queue of its own instead, ``rpc_{service}_{uuid}_response`` (the same
machinery with one client), so that broker permissions can be limited to it (see the security page).

The queue is consumed while at least one of its clients runs (between ``serve()`` and ``stop()``); a client
that stopped still gets the replies that come while others keep the queue consumed, and those that come
while none does wait in the queue. A client that is garbage collected leaves: its bindings are removed the
next time a client joins. If the queue disappears (deleted, or expired while no client ran), every waiting
call of every sharer fails with :exc:`~amphora.ReplyQueueLost`, and the queue is declared again.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import gevent

from .amqp import Channel, Connection, ConnectionParameters, Message
from .amqp.errors import AMQPError, ChannelClosed, NotFound
from .link import Link, queue_exists, settle_quietly
from .protocol import HEADER_CLIENT
from .topology import Binding, DeclarationSet, Entity, Exchange, Queue, ServiceTopology

log = logging.getLogger(__name__)

REPLY_PREFETCH = 1000
"""Unacknowledged replies the shared queue's consumer takes at most."""


class ReplyConsumer(Protocol):
    """What a client offers the shared queue."""

    uuid: str
    topology: ServiceTopology

    def on_reply(self, message: Message) -> None:
        """A reply, or an expired request, routed for this client (reader greenlet; must not block)."""

    def has_pending_calls(self) -> bool:
        """Whether calls wait for replies."""

    def fail_pending_calls(self, error_text: str) -> None:
        """Fail every waiting call with :exc:`~amphora.ReplyQueueLost`."""


_Key = tuple[str, str]  # (exchange, client uuid)
_ClientRef = weakref.ref[ReplyConsumer]
_Registration = tuple[_ClientRef, tuple[_Key, ...], list[Entity]]


class SharedReplies:
    """One shared reply queue, its consumer and the clients it serves (see the module docstring)."""

    def __init__(self, parameters: Sequence[ConnectionParameters], queue: Queue) -> None:
        self.queue = queue.name
        self.link = Link(parameters, f"reply queue {self.queue}", prefetch=REPLY_PREFETCH)
        self._bindings = DeclarationSet()
        """What each client's replies need (its exchanges and two bindings), counted by the clients needing it."""
        self.link.declare([queue, self._bindings])
        self.link.on_connected(self._check_queue)
        self.link.on_ready(self._bind_latecomers)
        self.link.on_ready(self._start_unbinding)
        self.link.add_consumer(self.queue, self._on_message, on_cancel=self._on_cancelled)
        self._clients: dict[_Key, _ClientRef] = {}
        self._gone: collections.deque[_Registration] = collections.deque()
        """Registrations of clients that were garbage collected (appended by weakref callbacks, in any thread)."""
        self._unbinding: list[Binding] = []
        self._unbinder: gevent.Greenlet | None = None
        self._running: weakref.WeakSet[ReplyConsumer] = weakref.WeakSet()

    # --- clients ---------------------------------------------------------------------------------

    def add(self, client: ReplyConsumer) -> None:
        """Route ``client``'s replies here: bound now if the queue is consumed, else once it is."""
        self._forget_gone()
        topology, client_id = client.topology, client.uuid
        keys = ((topology.response_exchange, client_id), (topology.dead_exchange, client_id))
        needs = self._needs(topology, client_id)
        ref = weakref.ref(client, lambda gone: self._gone.append((gone, keys, needs)))
        for key in keys:
            self._clients[key] = ref
        if self._bindings.add(needs) and self.link.ready.is_set():
            try:  # on a channel of the link's own: a refusal closes only that one
                self.link.execute(self._bindings.declare, timeout=self.link.connection_timeout)
            except (ChannelClosed, TimeoutError):
                self._remove(ref, keys, needs)
                raise
            except AMQPError as exc:  # the connection is lost: declared once it is back
                log.debug("%s: binding a client waits for the reconnect: %s", self.link.name, exc)

    def _needs(self, topology: ServiceTopology, client_id: str) -> list[Entity]:
        return [
            Exchange(topology.response_exchange, "direct"),
            Exchange(topology.dead_exchange, "headers"),
            Binding(self.queue, topology.response_exchange, client_id),
            Binding(self.queue, topology.dead_exchange, arguments={"x-match": "all", HEADER_CLIENT: client_id}),
        ]

    def _forget_gone(self) -> None:
        """Drop the registrations of clients that were garbage collected, and unbind what none needs now."""
        unneeded: list[Entity] = []
        while self._gone:
            unneeded += self._remove(*self._gone.popleft())
        self._unbinding += [d for d in unneeded if isinstance(d, Binding)]
        if self._unbinding and self.link.ready.is_set():
            self._start_unbinding()

    def _remove(self, ref: _ClientRef, keys: tuple[_Key, ...], needs: list[Entity]) -> list[Entity]:
        """Unregister one client; returns the declarations no client needs any more."""
        for key in keys:
            if self._clients.get(key) is ref:  # not if a client with the same uuid came since
                del self._clients[key]
        return self._bindings.remove(needs)

    def _start_unbinding(self, channel: Channel | None = None) -> None:
        """Remove the bindings no client needs from the broker, in the background (once connected)."""
        if self._unbinding and (self._unbinder is None or self._unbinder.dead):
            self._unbinder = gevent.spawn(self._unbind)

    def _unbind(self) -> None:
        def unbind(binding: Binding, channel: Channel) -> None:
            channel.queue_unbind(binding.queue, binding.exchange, binding.routing_key, binding.arguments or None)

        while self._unbinding:
            binding = self._unbinding.pop()
            if binding in self._bindings:  # a client that needs it came since
                continue
            try:
                self.link.execute(functools.partial(unbind, binding), timeout=self.link.connection_timeout)
            except NotFound:  # its exchange is gone, and the binding with it
                pass
            except (AMQPError, TimeoutError) as exc:  # removed after the reconnect
                self._unbinding.append(binding)
                log.debug("%s: removing %d bindings waits: %s", self.link.name, len(self._unbinding), exc)
                return

    def _live_clients(self) -> Iterator[ReplyConsumer]:
        seen: set[int] = set()
        for ref in list(self._clients.values()):
            client = ref()
            if client is not None and id(client) not in seen:
                seen.add(id(client))
                yield client

    # --- running ---------------------------------------------------------------------------------

    def start(self, client: ReplyConsumer) -> None:
        """``client`` runs: the queue is consumed (at once if another client already has it consumed)."""
        self._running.add(client)
        self.link.start()

    def wait_tried(self, since: float) -> None:
        """Wait, until one connection timeout after ``since`` (when the client started it), until the queue is
        consumed or every broker URL failed once; raise what reconnecting cannot fix."""
        self.link.wait_tried(max(0.0, since + self.link.connection_timeout - time.monotonic()))

    def stop(self, client: ReplyConsumer) -> None:
        """``client`` stopped: once no client runs, the queue is no longer consumed (replies wait there)."""
        self._running.discard(client)
        if not self._running:
            self.link.stop()

    # --- the consumer (reader greenlet) ------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        # an expired request, dead-lettered here, names its caller in a header (its routing key is the request's);
        # a reply has no such header and is routed by its caller's id
        client_id = (message.properties.headers or {}).get(HEADER_CLIENT) or message.routing_key
        ref = self._clients.get((message.exchange, str(client_id)))
        client = ref() if ref is not None else None
        if client is not None:
            client.on_reply(message)
        settle_quietly(message.ack)  # if the channel is gone: redelivered, then dropped as already answered

    def _bind_latecomers(self, channel: Channel) -> None:
        """Bind, before the queue counts as consumed, the clients that came while the link set up."""
        self.link.set_up(channel, self._bindings.declare)

    def _fail_all(self, error_text: str) -> None:
        for client in list(self._live_clients()):
            client.fail_pending_calls(error_text)

    def _on_cancelled(self, consumer_tag: str) -> None:
        self._fail_all(f"the reply queue {self.queue} was deleted while calls waited on it")
        self._bindings.redeclare_all()  # they went with it
        gevent.spawn(self.link.reset)  # declare it again and consume anew

    def _check_queue(self, connection: Connection) -> None:
        """On a reconnect with calls waiting: fail them at once if the queue vanished meanwhile (not on the
        first connection, which declares it: calls made before wait for it)."""
        self._bindings.redeclare_all()  # the broker may have lost them (a restart without persistence, an expiry)
        if not self.link.generation or not any(c.has_pending_calls() for c in self._live_clients()):
            return
        if not queue_exists(connection, self.queue):
            self._fail_all(f"the reply queue {self.queue} expired while its clients were away")


_per_hub: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], SharedReplies]] = weakref.WeakKeyDictionary()


def shared_replies(
    parameters: Sequence[ConnectionParameters], topology: ServiceTopology, queue: str | None = None
) -> SharedReplies:
    """The reply queue of the calling thread's gevent hub for ``parameters``' brokers and ``topology``'s reply
    queue settings (``reply_queue_expires``, queue type): the queue named ``queue`` if given (a client with a
    fixed uuid has one of its own, see :meth:`ServiceTopology.own_reply_queue`), else one for all of them."""
    hub = gevent.get_hub()
    queues = _per_hub.get(hub)
    if queues is None:
        queues = _per_hub[hub] = {}
    key = (
        tuple(parameters),
        tuple(id(p.ssl_context) for p in parameters),
        topology.reply_queue_expires_ms,
        topology.queue_type,
        queue,
    )
    replies = queues.get(key)
    if replies is None:
        name = queue or f"rpc_replies_{uuid.uuid4().hex}"
        replies = queues[key] = SharedReplies(parameters, topology.reply_queue_declaration(name))
    return replies
