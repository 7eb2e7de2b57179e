"""The headers RabbitMQ (3.10) puts on a dead-lettered message: ``x-death`` and ``x-first-death-*``."""

from __future__ import annotations

import datetime
from typing import Any

from ..amqp.message import Properties
from ..amqp.properties import decode_properties, encode_properties, replaced

REASONS = ("expired", "rejected", "maxlen")


def dead_lettered(
    properties: Properties, reason: str, queue: str, exchange: str, routing_key: str, now: float
) -> Properties:
    """A dead letter's properties: its ``x-death`` history gains (or counts once more) the entry for ``queue``
    and ``reason``, first in the list; a per-message ``expiration`` moves into it as ``original-expiration``."""
    headers: dict[str, Any] = dict(properties.headers or {})
    deaths = [death for death in headers.get("x-death") or [] if isinstance(death, dict)]
    previous = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == reason), None)
    if previous is not None:
        deaths.remove(previous)
        entry = {**previous, "count": int(previous.get("count", 1)) + 1}
    else:
        entry = {"count": 1, "reason": reason, "queue": queue, "exchange": exchange, "routing-keys": [routing_key]}
        if properties.expiration is not None:
            entry["original-expiration"] = properties.expiration
    entry["time"] = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    headers["x-death"] = [entry, *deaths]
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", exchange)
    # through the codec, as RabbitMQ's consumers get them (a timestamp comes back as pamqp decodes it)
    return decode_properties(encode_properties(replaced(properties, headers=headers, expiration=None)))
