"""An AsyncAPI 3.0 document of a service, as one of its servers sees it (``amphora asyncapi MODULE:SERVER``).

The document describes the server's side: it receives each function's request on the service's request
exchange (per-key request queues are the channel's ``routingKey`` parameter) and replies on the reply
exchange to the caller's routing key. AMQP properties that AsyncAPI has no field for (``message_id``,
``correlation_id``, ``reply_to``) are named in runtime expressions on ``$message.header``: amphora's
convention, since AMQP keeps them beside the headers (see docs/protocol.rst).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .amqp import ConnectionParameters
from .describe import describe_functions
from .protocol import (
    HANDLER_TIMEOUT,
    HEADER_CAST,
    HEADER_CLIENT,
    HEADER_DEADLINE,
    HEADER_ERROR,
    HEADER_SERVER,
    HEADER_VERSION,
    PROTOCOL_VERSION,
    WRONG_REQUEST,
)

if TYPE_CHECKING:
    from .server import AmqpRpcServer

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
SCHEMA_REF = "#/components/schemas/{name}"
REQUEST_HEADERS = "amphora.RequestHeaders"
REPLY_HEADERS = "amphora.ReplyHeaders"
ERROR = "amphora.error"

POSITIONAL = {"positional", "positional_or_keyword"}
"""Parameter kinds (as in a description) that a request may give in ``args``; BY_NAME: in ``kwargs``."""
BY_NAME = {"positional_or_keyword", "keyword"}


def _ref(*path: str) -> dict[str, str]:
    """A JSON reference into the document; ``/`` and ``~`` in names escaped as JSON Pointer wants."""
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _exchange(name: str, kind: str, vhost: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": vhost}


def request_payload(name: str, function: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a request body that calls ``function`` (a description's entry) as ``name``."""
    parameters = function["parameters"]
    positional = [p["schema"] for p in parameters if p["kind"] in POSITIONAL]
    variadic = [p["schema"] for p in parameters if p["kind"] == "var_positional"]
    named = {p["name"]: p["schema"] for p in parameters if p["kind"] in BY_NAME}
    extra = [p["schema"] for p in parameters if p["kind"] == "var_keyword"]
    required = [p["name"] for p in parameters if p["kind"] == "keyword" and p["required"]]
    kwargs: dict[str, Any] = {
        "type": "object",
        "properties": named,
        "additionalProperties": extra[0] if extra else False,
    }
    if required:
        kwargs["required"] = required
    return {
        "type": "object",
        "properties": {
            "func": {"const": name},
            "args": _args_schema(positional, variadic[0] if variadic else False),
            "kwargs": kwargs,
        },
        "required": ["func"],
    }


def _args_schema(positional: list[Any], variadic: Any) -> dict[str, Any]:
    """The schema of ``args`` (draft 7, which AsyncAPI's schemas follow: a list of ``items`` per position)."""
    if not positional:
        return {"type": "array", "items": variadic}
    return {"type": "array", "items": positional, "additionalItems": variadic}


def _headers() -> dict[str, Any]:
    """The schemas of the headers amphora sets on requests and on replies."""
    version = {"type": "integer", "description": f"amphora's protocol version ({PROTOCOL_VERSION})"}
    return {
        REQUEST_HEADERS: {
            "type": "object",
            "properties": {
                HEADER_VERSION: version,
                HEADER_CLIENT: {
                    "type": "string",
                    "description": "the caller's id: routes a request that expires in its queue back to it",
                },
                HEADER_DEADLINE: {
                    "type": "integer",
                    "description": "Unix time in milliseconds after which a server must not start the request",
                },
                HEADER_CAST: {"type": "boolean", "description": "true: the caller wants no reply"},
            },
        },
        REPLY_HEADERS: {
            "type": "object",
            "properties": {
                HEADER_VERSION: version,
                HEADER_SERVER: {"type": "string", "description": "the name of the server that replied"},
                HEADER_ERROR: {
                    "type": "string",
                    "enum": [WRONG_REQUEST, HANDLER_TIMEOUT],
                    "description": "a failure of amphora's rather than of the function",
                },
            },
        },
    }


def _error_message(content_type: str) -> dict[str, Any]:
    return {
        "name": ERROR,
        "title": "Error reply",
        "summary": "The function raised, ran past its time limit, or the server refused the request.",
        "contentType": content_type,
        "headers": {"$ref": SCHEMA_REF.format(name=REPLY_HEADERS)},
        "correlationId": _ref("components", "correlationIds", "reply"),
        "payload": {
            "type": "object",
            "properties": {
                "exception": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "description": "the exception's class name, e.g. WrongRequest"},
                        "args": {"type": "array"},
                        "traceback": {"type": "string"},
                    },
                    "required": ["type", "args"],
                }
            },
            "required": ["exception"],
        },
    }


def _servers(brokers: Sequence[ConnectionParameters]) -> dict[str, Any]:
    return {
        f"broker{index}" if index else "broker": {
            "host": f"{broker.host}:{broker.port}",
            "pathname": broker.vhost if broker.vhost.startswith("/") else f"/{broker.vhost}",
            "protocol": "amqps" if broker.tls else "amqp",
            "protocolVersion": "0.9.1",
        }
        for index, broker in enumerate(brokers)
    }


def asyncapi_document(server: AmqpRpcServer, brokers: Sequence[ConnectionParameters]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``server``'s service, reached through ``brokers``."""
    topology = server.topology
    content_type = server.serializer.content_type
    vhost = brokers[0].vhost if brokers else "/"
    functions, schemas = describe_functions(server._functions.public(), SCHEMA_REF)
    messages: dict[str, Any] = {ERROR: _error_message(content_type)}
    operations: dict[str, Any] = {}
    for name, function in functions.items():
        summary = (function["doc"] or "").split("\n\n")[0] or None
        common = {"contentType": content_type, **({"summary": summary} if summary else {})}
        messages[f"{name}.request"] = {
            "name": f"{name}.request",
            "title": f"{name}{function['signature'].split(' -> ')[0]}",
            **common,
            "headers": {"$ref": SCHEMA_REF.format(name=REQUEST_HEADERS)},
            "correlationId": _ref("components", "correlationIds", "request"),
            "payload": request_payload(name, function),
        }
        messages[f"{name}.reply"] = {
            "name": f"{name}.reply",
            **common,
            "headers": {"$ref": SCHEMA_REF.format(name=REPLY_HEADERS)},
            "correlationId": _ref("components", "correlationIds", "reply"),
            "payload": {"type": "object", "properties": {"result": function["result"]}, "required": ["result"]},
        }
        operations[name] = {
            "action": "receive",
            "channel": _ref("channels", "requests"),
            "title": function["signature"],
            **({"summary": summary} if summary else {}),
            **({"description": function["doc"]} if function["doc"] else {}),
            "messages": [_ref("channels", "requests", "messages", f"{name}.request")],
            "reply": {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "the request's reply_to property: the routing key of the caller's reply queue",
                },
                "channel": _ref("channels", "replies"),
                "messages": [
                    _ref("channels", "replies", "messages", f"{name}.reply"),
                    _ref("channels", "replies", "messages", ERROR),
                ],
            },
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
    requests = {f"{name}.request": _ref("components", "messages", f"{name}.request") for name in functions}
    replies = {key: _ref("components", "messages", key) for key in messages if key == ERROR or key.endswith(".reply")}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"amphora service {server.service_name}",
            "version": f"amphora protocol {PROTOCOL_VERSION}",
            "description": (
                f"Remote calls to the functions of {server.service_name!r}, an amphora "
                f"{'fanout ' if server.fanout else ''}service (reliable RPC over AMQP 0-9-1)."
            ),
        },
        "servers": _servers(brokers),
        "defaultContentType": content_type,
        "channels": {
            "requests": _requests_channel(server, requests, vhost),
            "replies": {
                "address": "{client}",
                "title": "Replies",
                "description": (
                    f"Replies, published to the exchange {topology.response_exchange} with the caller's reply_to as "
                    "routing key; the caller reads them from a queue it bound to that exchange with its id."
                ),
                "parameters": {"client": {"description": "the calling client's id (its reply_to)"}},
                "messages": replies,
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": _exchange(topology.response_exchange, "direct", vhost),
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
            },
        },
        "operations": operations,
        "components": {
            "schemas": {**schemas, **_headers()},
            "messages": messages,
            "correlationIds": {
                "request": {
                    "location": "$message.header#/message_id",
                    "description": "the request's message_id property (unique per call)",
                },
                "reply": {
                    "location": "$message.header#/correlation_id",
                    "description": "the reply's correlation_id property: its request's message_id",
                },
            },
        },
    }


def _requests_channel(server: AmqpRpcServer, messages: dict[str, Any], vhost: str) -> dict[str, Any]:
    """The request exchange: a fanout one copies each request to every server's queue; a direct one routes
    it by routing key, empty for the default queue or a per-key queue's key."""
    topology = server.topology
    exchange = {"exchange": _exchange(topology.request_exchange, "fanout" if server.fanout else "direct", vhost)}
    channel: dict[str, Any] = {"title": "Requests", "messages": messages}
    if server.fanout:
        channel["address"] = None
        channel["description"] = (
            f"Requests, published to the fanout exchange {topology.request_exchange}: every server gets a copy "
            f"in its own queue {topology.fanout_queue('{server}')}."
        )
    else:
        channel["address"] = "{routingKey}"
        channel["parameters"] = {
            "routingKey": {
                "description": (
                    f"empty for the default request queue {topology.default_queue}, which any server takes from; "
                    f"a per-key queue's routing key (by default its label) for {topology.request_queue('{label}')}"
                ),
                "default": "",
            }
        }
        channel["description"] = f"Requests, published to the direct exchange {topology.request_exchange}."
    channel["bindings"] = {"amqp": {"is": "routingKey", **exchange, "bindingVersion": AMQP_BINDING_VERSION}}
    return channel
