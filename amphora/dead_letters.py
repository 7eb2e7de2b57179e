"""A service's dead letters (``rpc_{service}_dead``): reading them, putting chosen ones back, purging.

Servers dead-letter there the requests they refuse (malformed, unknown function, too large...), with the
reason in ``x-amphora-reason``; the queue keeps the newest ``dead_letter_limit`` of them. This module is what
``amphora dead`` runs: it takes the queue's messages on a channel of its own without acknowledging them, so
closing the channel puts every one it did not requeue back, in its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gevent.event import Event

from .amqp import Connection, Message, Properties
from .amqp.properties import replaced
from .compression import BodyRefused, decompress
from .protocol import (
    HEADER_CLIENT,
    HEADER_DEAD,
    HEADER_DEADLINE,
    HEADER_REASON,
    MalformedRequest,
    death,
    decode_request,
    make_serializer,
    serializer_for,
)
from .topology import ServiceTopology

MAX_READ_SIZE = 64 * 1024 * 1024
"""The largest unpacked body read to find a dead letter's function."""
DROPPED_ON_REQUEUE = (HEADER_DEAD, HEADER_REASON, HEADER_DEADLINE, "x-death", "x-first-death-exchange",
                      "x-first-death-queue", "x-first-death-reason")  # fmt: skip
"""Headers a requeued request sheds: the marks of its refusal, and the deadline that has likely passed."""
REQUEUED_SUFFIX = ".requeued"
_DEFAULT_SERIALIZER = make_serializer(None)


@dataclass
class DeadLetter:
    """What ``amphora dead`` shows of one dead-lettered request."""

    request_id: str
    age: float | None  # seconds since it was first published, if it carries a timestamp
    function: str
    caller: str
    reason: str
    arguments: str  # as JSON, shown only on request: arguments may hold secrets

    @classmethod
    def of(cls, message: Message, now: float) -> DeadLetter:
        properties = message.properties
        headers = properties.headers or {}
        timestamp = properties.timestamp
        age = None
        if timestamp is not None:
            # pamqp decodes a timestamp as a datetime; amphora's own codec may give the int it was sent as
            seconds = timestamp.timestamp() if isinstance(timestamp, datetime) else float(timestamp)
            age = max(0.0, now - seconds)
        function, arguments = _function_and_arguments(message)
        return cls(
            request_id=str(properties.message_id or "-"),
            age=age,
            function=function,
            caller=str(headers.get(HEADER_CLIENT) or properties.reply_to or "-"),  # a call's reply_to: its client
            reason=str(headers.get(HEADER_REASON) or _death_reason(headers)),
            arguments=arguments,
        )


def _death_reason(headers: dict[str, Any]) -> str:
    died = death(headers)
    return "-" if died is None else died.reason


def _function_and_arguments(message: Message) -> tuple[str, str]:
    properties = message.properties
    serializer = serializer_for(properties.content_type, _DEFAULT_SERIALIZER)
    if serializer is None:
        return f"? ({properties.content_type})", "-"
    try:
        body = decompress(message.body, properties.content_encoding, MAX_READ_SIZE)
        function, args, kwargs = decode_request(serializer, body)
    except (BodyRefused, MalformedRequest):
        return "? (unreadable body)", "-"
    return function, json.dumps({"args": args, "kwargs": kwargs}, ensure_ascii=False, default=repr)


def requeued_properties(properties: Properties) -> Properties:
    """A dead letter's properties for its way back to the request queue: the same call and reply address,
    without the marks of its refusal, its expiration or its deadline, under a new id (``ID.requeued``): the
    servers remember the refused id as answered, and would answer the copy with the refusal again."""
    headers = {k: v for k, v in (properties.headers or {}).items() if k not in DROPPED_ON_REQUEUE}
    return replaced(
        properties, headers=headers, expiration=None, message_id=f"{properties.message_id}{REQUEUED_SUFFIX}"
    )


class DeadLetterQueue:
    """The dead letters of one service, read on a channel of ``connection``; :meth:`close` puts back all
    that were not requeued or purged."""

    def __init__(self, connection: Connection, service: str, read_timeout: float = 5.0) -> None:
        self.topology = ServiceTopology(service)
        self._channel = connection.channel()
        self._read_timeout = read_timeout

    def read(self, limit: int) -> list[Message]:
        """Up to ``limit`` dead letters, oldest first, held unacknowledged."""
        waiting = self._channel.queue_declare(self.topology.dead_queue, passive=True).message_count
        wanted = min(waiting, limit)
        messages: list[Message] = []
        if not wanted:
            return messages
        enough = Event()

        def on_message(message: Message) -> None:
            messages.append(message)
            if len(messages) >= wanted:
                enough.set()

        self._channel.basic_qos(prefetch_count=wanted)
        tag = self._channel.basic_consume(self.topology.dead_queue, on_message)
        enough.wait(self._read_timeout)
        self._channel.basic_cancel(tag)
        return messages

    def requeue(self, messages: list[Message], timeout: float = 30.0) -> None:
        """Publish each to the service's request exchange again, then acknowledge the dead letter once the
        broker confirmed the copy (so a failure in between duplicates a request, never loses one)."""
        publisher = self._channel.connection.channel()
        publisher.confirm_select()
        try:
            for message in messages:
                properties = requeued_properties(message.properties)
                confirmation = publisher.basic_publish(message.body, self.topology.request_exchange, "", properties)
                assert confirmation is not None  # the channel confirms
                confirmation.wait(timeout)
                message.ack()
        finally:
            publisher.close()

    def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        return self._channel.queue_purge(self.topology.dead_queue)

    def close(self) -> None:
        """Close the channel: every dead letter read and not acknowledged goes back to the queue."""
        self._channel.close()
