"""The memory of answered requests: a redelivered request is answered again from it, not run again."""

from __future__ import annotations

from collections import OrderedDict

from .amqp import Properties


class Reply:
    """A reply as published, kept to answer a copy of its request: to the copy's own ``reply_to`` (its
    ``correlation_id`` is the request id, the same for every copy)."""

    __slots__ = ("body", "properties")

    def __init__(self, body: bytes, properties: Properties) -> None:
        self.body = body
        self.properties = properties


class AnsweredRequests:
    """Replies of the most recently answered requests, bounded by their number and by the bytes of their
    bodies (the oldest go first). A cast is remembered with ``None``: it ran, and has no reply."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._replies: OrderedDict[str, Reply | None] = OrderedDict()
        self._bytes = 0

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._replies

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, request_id: str) -> Reply | None:
        return self._replies[request_id]

    def remember(self, request_id: str, reply: Reply | None) -> None:
        replies = self._replies
        self._bytes += _size(reply) - _size(replies.pop(request_id, None))
        replies[request_id] = reply
        while replies and (len(replies) > self.max_count or self._bytes > self.max_bytes):
            self._bytes -= _size(replies.popitem(last=False)[1])


def _size(reply: Reply | None) -> int:
    return 0 if reply is None else len(reply.body)
