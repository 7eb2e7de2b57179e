"""Adapter for pika 1.4's ``GeventConnection``: pure callback style, callbacks run in gevent's hub.

Only the setup steps wait (a greenlet blocks on an AsyncResult the callback fills); publishing and
everything the workloads time happen in pika's own callbacks, as an idiomatic pika application would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
from gevent.event import AsyncResult
from pika.adapters.gevent_connection import GeventConnection

TIMEOUT = 30
NO_PROPERTIES = pika.BasicProperties()  # shared, so that pika does not build one per publish


def _wait(start: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a pika method that takes ``callback=`` and block this greenlet until it fires."""
    result = AsyncResult()
    start(*args, callback=result.set, **kwargs)
    return result.get(timeout=TIMEOUT)


class Client:
    def __init__(self, url: str) -> None:
        opened = AsyncResult()
        self._closed = AsyncResult()
        self.conn = GeventConnection(
            pika.URLParameters(url),
            on_open_callback=opened.set,
            on_open_error_callback=lambda _conn, exc: opened.set_exception(RuntimeError(f"pika: {exc!r}")),
            on_close_callback=lambda _conn, exc: self._closed.set(exc),
        )
        opened.get(timeout=TIMEOUT)
        self.on_confirmed: Callable[[int, bool], None] = lambda count, ok: None
        self.on_reply: Callable[[str, bytes], None] = lambda correlation_id, body: None
        self._confirmed_upto = 0

    def _channel(self) -> Any:
        result = AsyncResult()
        self.conn.channel(on_open_callback=result.set)
        return result.get(timeout=TIMEOUT)

    # --- W-confirm ---

    def prepare_confirm(self, queue: str) -> None:
        self._confirm_queue = queue
        channel = self._confirm_channel = self._channel()
        _wait(channel.queue_declare, queue, durable=True)
        _wait(channel.confirm_delivery, ack_nack_callback=self._on_ack_nack)

    def purge(self) -> None:
        _wait(self._confirm_channel.queue_purge, self._confirm_queue)

    def publish_confirmed(self, body: bytes) -> None:
        self._confirm_channel.basic_publish("", self._confirm_queue, body, NO_PROPERTIES)

    def _on_ack_nack(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        count = tag - self._confirmed_upto if method.multiple else 1
        self._confirmed_upto = max(self._confirmed_upto, tag)
        self.on_confirmed(count, isinstance(method, pika.spec.Basic.Ack))

    # --- ping-pong ---

    def prepare_rpc(self, request_queue: str) -> None:
        channel = self._rpc_channel = self._channel()
        _wait(channel.queue_declare, request_queue)
        self._request_queue = request_queue
        self._reply_queue = _wait(channel.queue_declare, "", exclusive=True).method.queue
        _wait(
            channel.basic_consume,
            self._reply_queue,
            lambda _ch, _method, props, body: self.on_reply(props.correlation_id, body),
            auto_ack=True,
        )

    def request(self, correlation_id: str, body: bytes) -> None:
        properties = pika.BasicProperties(correlation_id=correlation_id, reply_to=self._reply_queue)
        self._rpc_channel.basic_publish("", self._request_queue, body, properties)

    def serve_echo(self, request_queue: str) -> None:
        channel = self._channel()
        _wait(channel.queue_declare, request_queue)
        publish = channel.basic_publish
        BasicProperties = pika.BasicProperties

        def echo(_ch: Any, _method: Any, props: Any, body: bytes) -> None:
            publish("", props.reply_to, body, BasicProperties(correlation_id=props.correlation_id))

        _wait(channel.basic_consume, request_queue, echo, auto_ack=True)

    # --- teardown ---

    def delete_queue(self, queue: str) -> None:
        channel = self._channel()
        _wait(channel.queue_delete, queue)
        channel.close()

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()
            self._closed.get(timeout=TIMEOUT)
