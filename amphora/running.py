"""RunningRequests: the requests a server is handling, each with every delivery of it that is held.

A request runs once however often it is delivered: a copy that arrives while it runs (the caller's publish
again after a reconnect, a redelivery) joins it, and gets the same reply, to its own ``reply_to``. No I/O:
the server settles the deliveries it is handed.
"""

from __future__ import annotations

from .amqp import Message


class RunningRequests:
    """The deliveries held for each running request, by request id: the one a worker handles first."""

    def __init__(self) -> None:
        self._deliveries: dict[str, list[Message]] = {}

    def __len__(self) -> int:
        """Requests running."""
        return len(self._deliveries)

    def held(self, request_id: str) -> int:
        """Deliveries held of the request (0: it does not run)."""
        return len(self._deliveries.get(request_id, ()))

    def join(self, request_id: str, delivery: Message) -> bool:
        """Add a copy to the request if it runs; False if it does not (the copy is not kept)."""
        deliveries = self._deliveries.get(request_id)
        if deliveries is None:
            return False
        deliveries.append(delivery)
        return True

    def start(self, request_id: str, delivery: Message) -> None:
        """The request starts with ``delivery``, the one it is handled by."""
        self._deliveries[request_id] = [delivery]

    def first_open(self, request_id: str | None) -> Message | None:
        """Drop the copies whose channel is closed (the broker gave them to another consumer); the first one
        left, to handle the request by, or None if there is none (the request is forgotten)."""
        deliveries = [d for d in self._deliveries.pop(request_id, ()) if d.channel.is_open] if request_id else []
        if not deliveries:
            return None
        self._deliveries[str(request_id)] = deliveries
        return deliveries[0]

    def take_all(self, request_id: str | None, delivery: Message) -> list[Message]:
        """The request ends: every delivery of it, to reply to or hand back; ``[delivery]`` if it is not
        running (a request without an id, or one answered without starting)."""
        if not request_id:
            return [delivery]
        return self._deliveries.pop(request_id, None) or [delivery]
