"""amphora's wire format: serializers, request and reply bodies, and the headers both sides use.

A request body is ``{"func": "a.b", "args": [...], "kwargs": {...}}``; a reply body is ``{"result": ...}`` or
``{"exception": {"type": "ValueError", "args": [...]}}``. A reply to a request the server could not take
carries the header ``x-amphora-error: wrong-request`` and the reason as its exception.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib
import json
import uuid
from typing import Any, Protocol

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


class Serializer(Protocol):
    """Turns Python values into message bodies and back."""

    content_type: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """JSON, the default: readable, safe, spoken by every language.

    With ``pip install amphora[fast]`` it encodes with orjson and decodes with msgspec, and falls back to the
    standard library for what those refuse: keys that are not strings, ``NaN`` and infinities, numbers beyond a
    float's range, lone surrogates. orjson writes NaN and infinities as ``null``: JSON has no such numbers.
    Either way it writes datetimes, dates and times in ISO 8601, UUIDs as text, enums as their values and
    dataclasses as objects; bytes, sets and other objects raise :exc:`TypeError`.
    """

    content_type = "application/json"

    def __init__(self, fast: bool = True) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_as_orjson_writes)
        self._decoder = json.JSONDecoder()
        orjson, msgspec = (_optional("orjson"), _optional("msgspec")) if fast else (None, None)
        self._fast_dumps = orjson.dumps if orjson else None
        self._fast_loads = msgspec.json.Decoder().decode if msgspec else None

    def dumps(self, value: Any) -> bytes:
        if self._fast_dumps is not None:
            try:
                data: bytes = self._fast_dumps(value)
            except TypeError:
                pass
            else:
                # orjson's bytes keep their whole working buffer, 4 KiB for a small body and 10 to 40 times the
                # size of a large one (1 MiB for 87 KB): an exact copy lets it go at once, before the body
                # waits in an outbox or an answered-requests memory, and spares the heap the churn
                return memoryview(data).tobytes()
        return self._encoder.encode(value).encode()

    def loads(self, data: bytes) -> Any:
        if self._fast_loads is not None:
            try:
                return self._fast_loads(data)
            except ValueError:
                pass  # the standard library decides (and says what is wrong)
        return self._decoder.decode(data.decode())


def _as_orjson_writes(value: Any) -> Any:
    """The standard library's encoder's ``default``: the JSON value orjson writes for what the standard library
    cannot encode itself, so that a body does not depend on whether orjson is installed."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _optional(module: str) -> Any:
    """The module if it is installed, else None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class MsgpackSerializer:
    """MessagePack (needs the ``msgpack`` package): smaller and faster than JSON, and carries bytes."""

    content_type = "application/msgpack"

    def __init__(self) -> None:
        import msgpack

        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def dumps(self, value: Any) -> bytes:
        return self._packb(value, use_bin_type=True)

    def loads(self, data: bytes) -> Any:
        return self._unpackb(data, raw=False)


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
        try:
            return MsgpackSerializer()
        except ImportError:
            return None
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
