"""A service's contract: its functions' signatures, docstrings and JSON Schemas, as every server tells it
when called ``amphora.describe`` (the answer is documented in docs/protocol.rst)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import msgspec

from .functions import Function
from .protocol import PROTOCOL_VERSION
from .validation import UNCHECKED, handler_signature, parameter_annotations, result_annotation, type_hints

if TYPE_CHECKING:
    from .server import AmqpRpcServer

DESCRIBE = "amphora.describe"
"""The reserved function every server answers with its description."""
DESCRIPTION_VERSION = 1
"""The version of the description's layout; a reader ignores keys it does not know."""
DEFS_REF = "#/$defs/{name}"
"""Where a description's schemas refer to the shared ones (its ``$defs``)."""
ANY: dict[str, Any] = {}
"""The JSON Schema of an argument or result that is not described: any value."""

PARAMETER_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _default(parameter: inspect.Parameter) -> dict[str, Any]:
    """``{"default": value}`` for a default the wire can carry, else {}."""
    if parameter.default is inspect.Parameter.empty:
        return {}
    try:
        return {"default": msgspec.to_builtins(parameter.default)}
    except TypeError:
        return {}


def _resolved(signature: inspect.Signature, hints: dict[str, Any]) -> inspect.Signature:
    """``signature`` with its annotations' text (``from __future__ import annotations``) resolved."""
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    return signature.replace(parameters=parameters, return_annotation=hints.get("return", signature.return_annotation))


def describe_functions(
    functions: dict[str, Function], ref_template: str = DEFS_REF
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(functions, schemas)``: each function's description by name, and the schemas they refer to by
    ``ref_template`` (``{name}`` is a schema's name). An annotation msgspec cannot describe is any value."""
    described: list[tuple[str, Function, inspect.Signature, dict[str, Any], Any]] = []
    annotations: list[Any] = []
    for name, function in functions.items():
        signature = handler_signature(function.func, function.context)
        hints = type_hints(function.func)
        checked = parameter_annotations(signature, hints)
        result = result_annotation(hints)
        described.append((name, function, _resolved(signature, hints), checked, result))
        annotations += [*checked.values(), *([result] if result is not UNCHECKED else [])]
    schemas, components = msgspec.json.schema_components(annotations, ref_template=ref_template)
    found = iter(schemas)
    descriptions = {}
    for name, function, signature, checked, result in described:
        parameters = [
            {
                "name": p.name,
                "kind": PARAMETER_KINDS[p.kind],
                "required": p.default is inspect.Parameter.empty and p.kind not in VARIADIC,
                **_default(p),
                "schema": next(found) if p.name in checked else ANY,
            }
            for p in signature.parameters.values()
        ]
        validator = function.validator
        descriptions[name] = {
            "signature": str(signature),
            "doc": inspect.getdoc(function.func),
            "parameters": parameters,
            "result": next(found) if result is not UNCHECKED else ANY,
            "validated": validator is not None and bool(validator.annotations),
            "result_checked": validator is not None and validator.result is not UNCHECKED,
            "time_limit": function.time_limit,
        }
    return descriptions, components


def describe(server: AmqpRpcServer) -> dict[str, Any]:
    """What ``amphora.describe`` answers: the server, its service, and its functions."""
    functions, schemas = describe_functions(server._functions.public())
    return {
        "description_version": DESCRIPTION_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "service": server.service_name,
        "server": server.name,
        "fanout": server.fanout,
        "content_type": server.serializer.content_type,
        "request_queues": _consumed_queues(server),
        "functions": functions,
        "$defs": schemas,
    }


def _consumed_queues(server: AmqpRpcServer) -> list[str]:
    """The request queues ``server`` takes requests from now: its own, and per-key ones it receives from."""
    default = [server._request_queue] if server.consume_default_queue else []
    return default + [receiver.queue for receiver in server._receivers if not receiver.done]


def format_description(description: dict[str, Any]) -> str:
    """A description as text: the service, then each function's signature and docstring."""
    kind = "fanout service" if description["fanout"] else "service"
    queues = ", ".join(description["request_queues"]) or "no queue"
    lines = [f"{kind} {description['service']}: server {description['server']} reading {queues}"]
    for name, function in description["functions"].items():
        unchecked = "" if function["validated"] else "  (arguments not checked)"
        lines.append(f"  {name}{function['signature']}{unchecked}")
        lines += [f"      {line}".rstrip() for line in (function["doc"] or "").splitlines()]
    return "\n".join(lines)
