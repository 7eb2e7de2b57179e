"""Publish/subscribe on a service's topic exchange ``rpc_{service}_events``, for clients and servers alike.

``publish(topic, data)`` is confirmed by the broker like every other message (it waits in the outbox while
the broker is away). ``subscribe(pattern, callback)`` binds a queue of its own with a topic pattern
(``orders.*``, ``orders.#``) and calls ``callback(topic, data)`` in a greenlet for each event, acknowledging
it once the callback returned; the subscription is restored after reconnects. Its queue outlives a lost
connection for ``expires`` seconds; a subscription with a stable ``name`` keeps a durable queue that holds
events while its subscriber is away.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult

from .amqp import Message, Properties
from .link import Link, settle_quietly
from .protocol import serializer_for
from .topology import Declaration
from .transport import OnTransport

log = logging.getLogger(__name__)

EventCallback = Callable[[str, Any], None]


class Subscription:
    """One ``subscribe``: its queue, and :meth:`cancel` to end it."""

    def __init__(self, link: Link, queue: str, declarations: list[Declaration], consumer_id: int) -> None:
        self.queue = queue
        self._link = link
        self._declarations = declarations
        self._consumer_id = consumer_id

    def cancel(self) -> None:
        """Stop receiving events (the queue expires by itself, or stays if it has a stable name)."""
        self._link.remove_consumer(self._consumer_id)
        self._link.forget(self._declarations)


class PubSub(OnTransport):
    """Mixed into clients and servers: events through their transport's outbox and consuming link."""

    persistent: bool

    def publish(self, topic: str, data: Any) -> AsyncResult:
        """Publish ``data`` under ``topic``; the AsyncResult is set (to None) once the broker has it."""
        confirmed = AsyncResult()
        properties = Properties(
            content_type=self.serializer.content_type,
            delivery_mode=2 if self.persistent else 1,
            message_id=uuid.uuid4().hex,
        )
        self.transport.outbox.publish(
            self.topology.events_exchange,
            topic,
            self.serializer.dumps(data),
            properties,
            on_done=lambda error: confirmed.set(None) if error is None else confirmed.set_exception(error),
        )
        return confirmed

    def subscribe(
        self, pattern: str, callback: EventCallback, *, name: str | None = None, expires: float = 60.0
    ) -> Subscription:
        """Call ``callback(topic, data)`` for every event whose topic matches ``pattern``."""
        queue = self.topology.events_queue(name or uuid.uuid4().hex)
        declarations = self.topology.subscription(queue, pattern, None if name else int(expires * 1000))
        link = self.transport.consumer
        link.declare(declarations)

        def on_event(message: Message) -> None:
            gevent.spawn(self._deliver_event, callback, message)

        return Subscription(link, queue, declarations, link.add_consumer(queue, on_event))

    def _deliver_event(self, callback: EventCallback, message: Message) -> None:
        serializer = serializer_for(message.properties.content_type, self.serializer)
        try:
            if serializer is None:
                raise ValueError(f"unsupported content type {message.properties.content_type!r}")
            data = serializer.loads(message.body)
        except Exception as exc:  # any decoding failure means a malformed event
            log.warning("dropping an undecodable event on %r: %s", message.routing_key, exc)
            settle_quietly(message.reject, False)
            return
        try:
            callback(message.routing_key, data)
        except Exception:
            log.exception("event callback %r failed on %r", callback, message.routing_key)
        settle_quietly(message.ack)
