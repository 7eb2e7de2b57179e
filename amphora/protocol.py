"""amphora's wire format, all of it (docs/protocol.rst describes the same): serializers, request and reply
bodies, the properties and headers of requests, replies and refused requests, and what a dead-lettered copy
tells.

A request body is ``{"func": "a.b", "args": [...], "kwargs": {...}}``; a reply body is ``{"result": ...}`` or
``{"exception": {"type": "ValueError", "args": [...]}}``. A reply to a request the server could not take
carries the header ``x-amphora-error: wrong-request`` and the reason as its exception.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple, Protocol

import msgspec

from .amqp import Properties
from .amqp.properties import replaced
from .exceptions import RemoteException, WrongResult

PROTOCOL_VERSION = 2
"""2: dead-letter routing on ``amphora-client``/``amphora-dead`` headers (1 used ``x-`` names that RabbitMQ
ignores in headers exchanges)."""
HEADER_VERSION = "x-amphora-version"
HEADER_CLIENT = "amphora-client"
"""The calling client's id on every request: routes an expired request back to its caller. No ``x-`` prefix:
RabbitMQ's headers exchanges ignore ``x-`` headers when matching."""
HEADER_DEADLINE = "x-amphora-deadline"
"""Unix time in milliseconds after which a server must not start the request."""
HEADER_SERVER = "x-amphora-server"
"""The identity of the server that sent a reply (its ``name``, or host, pid and a random suffix)."""
HEADER_CAST = "x-amphora-cast"
"""Set (true) on a request that wants no reply (``client.cast``); it needs no ``reply_to``."""
HEADER_ERROR = "x-amphora-error"
"""On a reply that reports a failure of amphora's rather than of the function: ``wrong-request`` (the
server could not take the request) or ``handler-timeout`` (the function ran past its time limit)."""
HEADER_DEAD = "amphora-dead"
"""Set to ``refused`` on a request a server dead-lettered (``x-amphora-reason`` says why); no ``x-`` prefix
either, as it is matched by a headers exchange."""
HEADER_REASON = "x-amphora-reason"
RESERVED_HEADER_PREFIXES = ("x-amphora-", "amphora-")
"""Header names amphora keeps for itself: callers and handlers may not set them."""
REFUSED = "refused"
WRONG_REQUEST = "wrong-request"
HANDLER_TIMEOUT = "handler-timeout"
DELIVERY_COUNT_HEADER = "x-delivery-count"
"""Set by quorum queues on a redelivered message: where a dead-lettered copy carries it (RabbitMQ 3.10 drops
it), it proves the request was delivered before."""


class Serializer(Protocol):
    """Turns Python values into message bodies and back."""

    content_type: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


_KEPT_BUFFER = 1 << 20
"""A serializer keeps its encoding buffer after a body of up to this many bytes (1 MiB)."""


class _MsgspecSerializer:
    """A serializer of msgspec's: ``codec`` is ``msgspec.json`` or ``msgspec.msgpack``."""

    content_type: str
    codec: Any

    def __init__(self) -> None:
        encoder = self.codec.Encoder()
        self._encode, self._encode_into = encoder.encode, encoder.encode_into
        self._decode = self.codec.Decoder().decode
        self._buffers = [bytearray()]

    def dumps(self, value: Any) -> bytes:
        # msgspec grows a new buffer by halves for every body and its bytes keep it (up to half their size
        # again): encoding into one kept buffer and copying out the body's exact size spares a large body the
        # growing and the heap the churn (W3 in a new process: 35 -> 21 page faults per call)
        try:
            buffer = self._buffers.pop()  # atomic: a thread that finds none encodes on its own
        except IndexError:
            return self._encode(value)
        try:
            self._encode_into(value, buffer)
            return bytes(buffer)
        finally:
            self._buffers.append(buffer if len(buffer) <= _KEPT_BUFFER else bytearray())

    def loads(self, data: bytes) -> Any:
        return self._decode(data)


class JsonSerializer(_MsgspecSerializer):
    """JSON, the default: readable, safe, spoken by every language. msgspec encodes and decodes it.

    Beyond JSON's own types it writes tuples, sets and frozensets as arrays, datetimes, dates and times in
    ISO 8601 (UTC as ``Z``), timedeltas as ISO 8601 durations, UUIDs and decimals as text, enums as their
    values, dataclasses as objects, and bytes as base64 text; they arrive as lists, strings and dictionaries.
    Integers of any size survive both ways; dictionary keys may be strings, numbers or enums (they arrive as
    strings). NaN and infinities are written as ``null``: JSON has no such numbers, and text that holds them
    (``NaN``, ``1e400``) is refused, as are lone surrogates. Other objects raise :exc:`TypeError`.
    """

    content_type = "application/json"
    codec = msgspec.json


class MsgpackSerializer(_MsgspecSerializer):
    """MessagePack: smaller and faster than JSON, and carries bytes. msgspec encodes and decodes it, strings as
    ``str`` and bytes as ``bin`` (as msgpack-python's ``packb(use_bin_type=True)`` and ``unpackb(raw=False)``).
    Integers must lie between -2**63 and 2**64 - 1 (:exc:`OverflowError`), integer keys stay integers, and
    timezone-aware datetimes travel as MessagePack timestamps and arrive as datetimes in UTC; the other types
    beyond MessagePack's own are written as :class:`JsonSerializer` writes them."""

    content_type = "application/msgpack"
    codec = msgspec.msgpack


RpcJsonSerializer = JsonSerializer
"""The original amphora's name for the JSON serializer."""


def serializer_for(content_type: str | None, default: Serializer) -> Serializer | None:
    """The serializer for a message's content type: ``default`` when it matches or none is given, JSON or
    MessagePack when named, None for anything else (never pickle)."""
    if not content_type or content_type == default.content_type:
        return default
    if content_type == JsonSerializer.content_type:
        return JsonSerializer()
    if content_type == MsgpackSerializer.content_type:
        return MsgpackSerializer()
    return None


def make_serializer(serializer: Serializer | type | None) -> Serializer:
    """A serializer instance from an instance, a class (the original API passed classes), or None (JSON)."""
    if serializer is None:
        return JsonSerializer()
    if isinstance(serializer, type):
        return serializer()
    return serializer


class MalformedRequest(ValueError):
    """A request body that cannot be taken; the message says why."""


def encode_request(serializer: Serializer, func: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return serializer.dumps({"func": func, "args": list(args), "kwargs": kwargs})


def decode_request(serializer: Serializer, body: bytes) -> tuple[str, list[Any], dict[str, Any]]:
    """``(func, args, kwargs)`` of a request body; MalformedRequest says what is wrong with it."""
    try:
        request = serializer.loads(body)
    except Exception as exc:
        raise MalformedRequest(f"cannot decode the request as {serializer.content_type}: {exc}") from None
    if not isinstance(request, dict):
        raise MalformedRequest(f"a request must be a mapping, got {type(request).__name__}")
    func, args, kwargs = request.get("func"), request.get("args", []), request.get("kwargs", {})
    if not isinstance(func, str) or not func:
        raise MalformedRequest("'func' must be a non-empty string")
    if not isinstance(args, list):
        raise MalformedRequest(f"'args' must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise MalformedRequest("'kwargs' must be a mapping of names to values")
    return func, args, kwargs


def encode_result(serializer: Serializer, value: Any) -> bytes:
    """A result reply; a result the serializer cannot encode becomes a TypeError reply."""
    try:
        return serializer.dumps({"result": value})
    except (TypeError, ValueError, OverflowError) as exc:
        return encode_exception(serializer, "TypeError", (f"the result cannot be serialized: {exc}",))


def encode_exception(
    serializer: Serializer, error_type: str, args: tuple[Any, ...], traceback: str | None = None
) -> bytes:
    """An exception reply (with the traceback text if given); arguments the serializer cannot encode are
    sent as their repr."""
    error: dict[str, Any] = {"type": error_type, "args": list(args)}
    if traceback is not None:
        error["traceback"] = traceback
    try:
        return serializer.dumps({"exception": error})
    except (TypeError, ValueError, OverflowError):
        error["args"] = [arg if _encodable(serializer, arg) else repr(arg) for arg in args]
        return serializer.dumps({"exception": error})


def _encodable(serializer: Serializer, value: Any) -> bool:
    try:
        serializer.dumps(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def decode_reply(serializer: Serializer, body: bytes) -> Any:
    """The result of a reply body, or raise the RemoteException it carries (WrongResult if unreadable)."""
    try:
        reply = serializer.loads(body)
    except Exception as exc:
        raise WrongResult(f"cannot decode the reply as {serializer.content_type}: {exc}") from None
    if isinstance(reply, dict):
        if "result" in reply:
            return reply["result"]
        error = reply.get("exception")
        if isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("args", []), list):
            traceback = error.get("traceback")
            raise RemoteException(
                error["type"], tuple(error.get("args", [])), traceback if isinstance(traceback, str) else None
            )
    raise WrongResult(f"a reply must hold 'result' or 'exception', got {str(reply)[:200]!r}")


# --- message properties ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _expiration(timeout: float) -> str:
    """A request's ``expiration`` property: its timeout in milliseconds (one string per timeout, not per call)."""
    return str(max(1, int(timeout * 1000)))


def request_properties(
    *,
    request_id: str,
    client_id: str,
    content_type: str,
    content_encoding: str | None,
    timeout: float | None,
    cast: bool = False,
    persistent: bool = True,
    priority: int | None = None,
    headers: dict[str, Any] | None = None,
) -> Properties:
    """A request's properties: it expires (and its deadline passes) ``timeout`` seconds from now; a cast has
    no ``reply_to``, a call's is its client's id (the routing key of the client's reply queue)."""
    all_headers: dict[str, Any] = {**(headers or {}), HEADER_VERSION: PROTOCOL_VERSION, HEADER_CLIENT: client_id}
    expiration = None
    now = time.time()
    if timeout:
        all_headers[HEADER_DEADLINE] = int((now + timeout) * 1000)
        expiration = _expiration(timeout)
    if cast:
        all_headers[HEADER_CAST] = True
    return Properties(
        content_type=content_type,
        content_encoding=content_encoding,
        delivery_mode=2 if persistent else 1,
        priority=priority,
        message_id=request_id,
        reply_to=None if cast else client_id,
        expiration=expiration,
        # whole seconds, what AMQP carries: pamqp types timestamp as datetime, amphora's own properties
        # codec (amqp/properties.py) encodes ints and datetimes alike
        timestamp=int(now),  # type: ignore[arg-type]
        headers=all_headers,
    )


def past_deadline(headers: dict[str, Any]) -> bool:
    """Whether a request's deadline has passed: a server must not start it."""
    deadline = headers.get(HEADER_DEADLINE)
    return isinstance(deadline, int) and deadline < time.time() * 1000


def reply_properties(
    *,
    request_id: str,
    server_name: str,
    content_type: str,
    content_encoding: str | None,
    persistent: bool = True,
    headers: dict[str, Any] | None = None,
) -> Properties:
    """A reply's properties: correlated to its request, naming the server that sent it."""
    return Properties(
        content_type=content_type,
        content_encoding=content_encoding,
        delivery_mode=2 if persistent else 1,
        correlation_id=request_id,
        headers={**(headers or {}), HEADER_VERSION: PROTOCOL_VERSION, HEADER_SERVER: server_name},
    )


def refused_properties(properties: Properties, reason: str) -> Properties:
    """The properties of a refused request's copy for the dead-letter exchange: marked refused, with the
    reason, never expiring, and without the client header (which would route it back to the caller)."""
    headers = {k: v for k, v in (properties.headers or {}).items() if k != HEADER_CLIENT}
    headers.update({HEADER_DEAD: REFUSED, HEADER_REASON: reason[:1000]})
    return replaced(properties, headers=headers, expiration=None)


# --- dead-lettered copies ------------------------------------------------------------------------------


class Death(NamedTuple):
    """What the broker's ``x-death`` header tells of a dead-lettered message."""

    reason: str
    """The latest: ``expired``, ``rejected`` or ``maxlen``."""
    delivered_before: bool
    """Known to have been delivered before (only quorum queues tell, and not every RabbitMQ version)."""


def death(headers: dict[str, Any]) -> Death | None:
    """What a dead-lettered message's headers tell of it; None if they carry no ``x-death``."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    first = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    return Death(str(first.get("reason", "expired")), bool(headers.get(DELIVERY_COUNT_HEADER)))
