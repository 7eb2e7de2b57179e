"""The ``x-`` arguments of a queue declaration that the memory broker honours, checked as RabbitMQ checks them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..amqp.errors import PreconditionFailed

OVERFLOWS = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum")
_COMPARED = ("x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-length",
             "x-overflow", "x-max-priority", "x-queue-type")  # fmt: skip
"""What must be equal when a queue is declared again (RabbitMQ ignores arguments it does not know)."""
_DEFAULTS = {"x-queue-type": "classic"}


@dataclass(frozen=True)
class QueueArguments:
    expires_ms: int | None = None
    message_ttl_ms: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_length: int | None = None
    overflow: str = "drop-head"
    max_priority: int | None = None
    quorum: bool = False

    @classmethod
    def parse(cls, queue: str, arguments: dict[str, Any]) -> QueueArguments:
        """The arguments of a new queue; PreconditionFailed for a value RabbitMQ refuses."""

        def number(name: str, minimum: int, maximum: int | None = None) -> int | None:
            value = arguments.get(name)
            if value is None:
                return None
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < minimum
                or (maximum and value > maximum)
            ):
                raise _invalid(name, queue, value)
            return value

        def choice(name: str, choices: tuple[str, ...]) -> str | None:
            value = arguments.get(name)
            if value is not None and value not in choices:
                raise _invalid(name, queue, value)
            return value

        def text(name: str) -> str | None:
            value = arguments.get(name)
            if value is not None and not isinstance(value, str):
                raise _invalid(name, queue, value)
            return value

        quorum = choice("x-queue-type", QUEUE_TYPES) == "quorum"
        return cls(
            expires_ms=number("x-expires", 1),
            message_ttl_ms=number("x-message-ttl", 0),
            dead_letter_exchange=text("x-dead-letter-exchange"),
            dead_letter_routing_key=text("x-dead-letter-routing-key"),
            max_length=number("x-max-length", 0),
            overflow=choice("x-overflow", OVERFLOWS) or "drop-head",
            max_priority=None if quorum else number("x-max-priority", 0, 255),  # quorum queues ignore it
            quorum=quorum,
        )

    @staticmethod
    def differing(current: dict[str, Any], received: dict[str, Any]) -> tuple[str, Any, Any] | None:
        """The first compared argument that a repeated declaration gives another value: (name, received,
        current); None if they are equivalent."""
        for name in _COMPARED:
            now, given = current.get(name, _DEFAULTS.get(name)), received.get(name, _DEFAULTS.get(name))
            if now != given:
                return name, given, now
        return None


def _invalid(name: str, queue: str, value: Any) -> PreconditionFailed:
    return PreconditionFailed(
        406, f"PRECONDITION_FAILED - invalid arg '{name}' for queue '{queue}' in vhost '/': {value!r}"
    )
