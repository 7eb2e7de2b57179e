"""The bare pamqp client doing what amphora's protocol asks of the broker: the floor of ``bench.rpc``.

Like ``raw_pamqp`` (whose frame handling it reuses), but every message goes the way amphora's go:

- published through a direct exchange, ``mandatory``, on a channel with publisher confirms (the client
  reads the confirms and does nothing with them);
- consumed with acknowledgements, one ``multiple`` ack per :data:`ACK_EVERY` deliveries, under a prefetch;
- with amphora's properties: content type, delivery mode, message id, reply-to, expiration, timestamp and
  its headers on a request; correlation id and headers on a reply.

What it leaves out is amphora itself: no outbox, no pending calls, no JSON, no greenlet per call. So its
distance from ``raw_pamqp`` is what the protocol costs, and amphora's distance from it is what the library
costs.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from pamqp import commands

from bench.clients import raw_pamqp

Basic = commands.Basic
ACK_EVERY = 16
PREFETCH = 200
CONTENT_TYPE = "application/json"
VERSION_HEADER = "amphora-version"


def exchange_of(request_queue: str) -> str:
    return f"{request_queue}.exchange"


class Client(raw_pamqp.Client):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._delivery_tags: dict[int, int] = {}  # channel -> tag of the delivery being handled
        self._unacked: dict[int, int] = {}  # channel -> deliveries not yet acknowledged

    def _dispatch(self, channel: int, value: Any) -> None:
        if isinstance(value, Basic.Deliver):
            self._delivery_tags[channel] = int(value.delivery_tag or 0)
        super()._dispatch(channel, value)

    def _acked_consumer(self, channel: int, callback: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
        """``callback``, then an ack of every delivery so far once :data:`ACK_EVERY` have gathered."""

        def consume(properties: Any, body: bytes) -> None:
            callback(properties, body)
            unacked = self._unacked[channel] = self._unacked.get(channel, 0) + 1
            if unacked >= ACK_EVERY:
                self._unacked[channel] = 0
                self._send(raw_pamqp.frame.marshal(Basic.Ack(self._delivery_tags[channel], multiple=True), channel))

        return consume

    def _consume(self, channel: int, queue: str, callback: Callable[[Any, bytes], None]) -> None:
        tag = f"raw.{len(self._consumers)}"
        self._consumers[tag] = self._acked_consumer(channel, callback)
        self._call(channel, Basic.Qos(prefetch_count=PREFETCH))
        self._call(channel, Basic.Consume(queue=queue, consumer_tag=tag, no_ack=False))

    def _declare_service(self, channel: int, request_queue: str) -> None:
        self._call(channel, commands.Exchange.Declare(exchange=exchange_of(request_queue), exchange_type="direct"))
        self._call(channel, commands.Queue.Declare(queue=request_queue, durable=True))
        self._call(channel, commands.Queue.Bind(queue=request_queue, exchange=exchange_of(request_queue)))
        self._call(channel, commands.Confirm.Select())

    def prepare_rpc(self, request_queue: str) -> None:
        channel = self._rpc_channel = self._open_channel()
        self._declare_service(channel, request_queue)
        self._request_queue = request_queue
        self._reply_queue = self._call(channel, commands.Queue.Declare(queue="", exclusive=True)).queue
        self._call(
            channel,
            commands.Queue.Bind(
                queue=self._reply_queue, exchange=exchange_of(request_queue), routing_key=self._reply_queue
            ),
        )
        self._consume(channel, self._reply_queue, lambda props, body: self.on_reply(props.correlation_id, body))

    def request(self, correlation_id: str, body: bytes) -> None:
        now = time.time()
        properties = Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=1,
            message_id=correlation_id,
            reply_to=self._reply_queue,
            expiration="30000",
            timestamp=datetime.datetime.fromtimestamp(int(now), datetime.UTC),
            headers={VERSION_HEADER: 2, "amphora-client": self._reply_queue, "amphora-deadline": int(now * 1000)},
        )
        self._publish(self._rpc_channel, "", body, properties, exchange_of(self._request_queue), mandatory=True)

    def serve_echo(self, request_queue: str) -> None:
        channel = self._open_channel()
        self._declare_service(channel, request_queue)
        exchange = exchange_of(request_queue)
        headers: dict[str, Any] = {VERSION_HEADER: 2, "amphora-server": f"echo-{id(self):x}"}

        def echo(props: Basic.Properties, body: bytes) -> None:
            properties = Basic.Properties(
                content_type=CONTENT_TYPE, delivery_mode=1, correlation_id=props.message_id, headers=headers
            )
            self._publish(channel, str(props.reply_to), body, properties, exchange, mandatory=True)

        self._consume(channel, request_queue, echo)

    def delete_queue(self, queue: str) -> None:
        super().delete_queue(queue)
        self._call(self._rpc_channel, commands.Exchange.Delete(exchange=exchange_of(queue)))
