"""Adapter for our own layer, ``amphora.amqp`` (see ``amphora/amqp/API.md``)."""

from __future__ import annotations

from collections.abc import Callable

from amphora import amqp
from amphora.amqp import Properties


class Client:
    def __init__(self, url: str) -> None:
        self.conn = amqp.connect(url)
        self.on_confirmed: Callable[[int, bool], None] = lambda count, ok: None
        self.on_reply: Callable[[str, bytes], None] = lambda correlation_id, body: None

    # --- W-confirm ---

    def prepare_confirm(self, queue: str) -> None:
        self._confirm_queue = queue
        self._confirm_channel = self.conn.channel()
        self._confirm_channel.queue_declare(queue, durable=True)
        self._confirm_channel.confirm_select()

    def purge(self) -> None:
        self._confirm_channel.queue_purge(self._confirm_queue)

    def publish_confirmed(self, body: bytes) -> None:
        confirmation = self._confirm_channel.basic_publish(body, "", self._confirm_queue)
        assert confirmation is not None  # the channel is in confirm mode
        confirmation.add_done_callback(self._settled)

    def _settled(self, confirmation: amqp.Confirmation) -> None:
        self.on_confirmed(1, confirmation.exception is None)

    # --- ping-pong ---

    def prepare_rpc(self, request_queue: str) -> None:
        channel = self._rpc_channel = self.conn.channel()
        channel.queue_declare(request_queue)
        self._request_queue = request_queue
        self._reply_queue = channel.queue_declare("", exclusive=True).queue
        channel.basic_consume(
            self._reply_queue,
            lambda message: self.on_reply(message.properties.correlation_id or "", message.body),
            no_ack=True,
        )

    def request(self, correlation_id: str, body: bytes) -> None:
        properties = Properties(correlation_id=correlation_id, reply_to=self._reply_queue)
        self._rpc_channel.basic_publish(body, "", self._request_queue, properties)

    def serve_echo(self, request_queue: str) -> None:
        channel = self.conn.channel()
        channel.queue_declare(request_queue)
        publish = channel.basic_publish

        def echo(message: amqp.Message) -> None:
            props = message.properties
            publish(message.body, "", props.reply_to or "", Properties(correlation_id=props.correlation_id))

        channel.basic_consume(request_queue, echo, no_ack=True)

    # --- teardown ---

    def delete_queue(self, queue: str) -> None:
        channel = self.conn.channel()
        channel.queue_delete(queue)
        channel.close()

    def close(self) -> None:
        self.conn.close()
