"""Typed handlers: arguments converted and checked by their type hints, results checked on request, and the
``amphora.describe`` answer every server gives."""

from __future__ import annotations

import datetime
import json
import logging
import textwrap
from pathlib import Path

import pytest
from gevent.event import Event
from typed_service import Box, Color, Point, paint

from amphora import AmqpRpcFanoutServer, MsgpackSerializer, RemoteException, WrongRequest
from amphora.cli import import_object, main
from amphora.dead_letters import DeadLetterQueue
from amphora.describe import DESCRIBE, describe, describe_functions, format_description
from amphora.functions import FunctionRegistry
from amphora.validation import ArgumentMismatch, build_validator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def validated(func, args, kwargs=None, context=False):  # type: ignore[no-untyped-def]
    validator = build_validator(func.__name__, func, context)
    assert validator is not None
    return validator.arguments(list(args), kwargs or {})


def refusal(func, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentMismatch) as caught:
        validated(func, args, kwargs)
    return str(caught.value)


def test_arguments_are_converted_from_json_types_to_the_annotations():
    point, box = {"x": 1, "y": 2}, {"corner": {"x": 0, "y": 0}, "size": 3}
    given = [point, box, "red", "2026-01-02T03:04:05Z", "aGk="]
    args, kwargs = validated(paint, given, {"options": {"scale": 2}, "note": None})
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert args[:4] == [Point(1.0, 2.0), Box(Point(0.0, 0.0), 3.0), Color.RED, when]
    assert args[4] == b"hi" and kwargs == {"options": {"scale": 2}, "note": None}


def test_a_mismatch_names_the_function_the_argument_and_what_was_expected():
    def add(x: int, y: int) -> int:
        return x + y

    assert refusal(add, 1, "2") == "add: argument 'y': expected int, got str"
    assert refusal(add, 1, y=2.5) == "add: argument 'y': expected int, got float"
    assert refusal(add, 1) == "add: missing a required argument: 'y'"
    assert refusal(add, 1, 2, 3) == "add: too many positional arguments"
    assert refusal(paint, {"x": 1, "y": "a"}, None, None, None, None, None, None) == (
        "paint: argument 'where': expected float, got str (at $.y)"
    )
    assert refusal(paint, {"x": 1, "y": 2}, {"corner": {"x": 0, "y": 0}, "size": 1}, "green", "x", "", {}, None) == (
        "paint: argument 'color': invalid enum value 'green'"
    )


def test_variadic_and_partly_annotated_parameters():
    def total(label, *values: int, **weights: float) -> str:
        return label

    assert validated(total, ["a", 1, 2], {"w": 1}) == (["a", 1, 2], {"w": 1.0})
    assert validated(total, [object(), 1])[0][1] == 1  # the unannotated label is not looked at
    with pytest.raises(ArgumentMismatch, match=r"argument 'values': expected int, got str \(at \$\[1\]\)"):
        validated(total, ["a", 1, "2"])
    with pytest.raises(ArgumentMismatch, match="total: argument 'w': expected float, got str"):
        validated(total, ["a"], {"w": "heavy"})


def test_unannotated_or_unconvertible_handlers_are_not_checked():
    class Opaque:
        pass

    def untyped(x, y):
        return x

    def opaque(x: Opaque) -> Opaque:
        return x

    assert build_validator("untyped", untyped, False) is None
    assert build_validator("opaque", opaque, False, check_result=True) is None


def test_the_request_context_is_not_part_of_the_checked_signature():
    def greet(context: object, name: str) -> str:
        return name

    assert validated(greet, ["Ada"], context=True) == (["Ada"], {})


def test_reserved_names_are_refused_and_validation_can_be_switched_off():
    def add(x: int) -> int:
        return x

    registry = FunctionRegistry(validate=False)
    with pytest.raises(ValueError, match="amphora's own"):
        registry.add(add, "amphora.add")
    registry.add(add)
    registry.add(add, "checked", validate=True)
    registry.add(add, "result_only", check_result=True)
    assert registry.get("add").validator is None  # type: ignore[union-attr]
    assert registry.get("checked").validator is not None  # type: ignore[union-attr]
    result_only = registry.get("result_only").validator  # type: ignore[union-attr]
    assert result_only is not None and result_only.arguments(["x"], {}) == (["x"], {})


# --- over the wire -----------------------------------------------------------------------------


def test_a_refused_call_fails_with_wrong_request_and_the_handler_does_not_run(
    make_server, make_client, service, connection
):
    ran = Event()
    server = make_server()

    @server.add_function
    def add(x: int, y: int) -> int:
        ran.set()
        return x + y

    server.serve()
    client = make_client(timeout=10)
    with pytest.raises(WrongRequest, match="add: argument 'x': expected int, got str"):
        client.call.add("1", 2)
    assert not ran.is_set()
    assert client.call.add(1, y=2) == 3
    dead = DeadLetterQueue(connection, service)
    try:
        (letter,) = dead.read(10)
        assert letter.properties.headers["x-amphora-reason"] == "add: argument 'x': expected int, got str"
    finally:
        dead.close()


def test_converted_types_reach_the_handler_with_json_and_messagepack(make_server, make_client):
    server = make_server()
    server.add_function(paint)
    server.serve()
    arguments = ({"x": 1, "y": 2}, {"corner": {"x": 0, "y": 0}, "size": 3}, "blue", "2026-01-02T03:04:05Z")
    for client in (make_client(timeout=10), make_client(timeout=10, serializer=MsgpackSerializer)):
        result = client.call.paint(*arguments, b"\x00\xff", options={"scale": 1}, note="n")
        assert result["types"] == ["Point", "Box", "Color", "datetime", "bytes", "dict", "str"]
        assert result["data"] in ("AP8=", b"\x00\xff")  # bytes travel as base64 in JSON


def test_results_are_checked_only_when_asked(make_server, make_client):
    server = make_server()
    server.add_function(lambda: "three", name="loose")

    def checked() -> int:
        return "three"  # type: ignore[return-value]

    server.add_function(checked, check_result=True)
    server.add_function(checked, "unchecked")
    server.serve()
    client = make_client(timeout=10)
    assert client.call.unchecked() == "three"
    with pytest.raises(RemoteException, match="checked: result: expected int, got str") as caught:
        client.call.checked()
    assert caught.value.error_type == "TypeError"


def test_a_server_without_validation_passes_arguments_as_they_come(make_server, make_client):
    server = make_server(validate=False)
    server.add_function(lambda x: type(x).__name__, name="kind")

    @server.add_function(validate=True)
    def strict(x: int) -> str:
        return type(x).__name__

    @server.add_function
    def loose(x: int) -> str:
        return type(x).__name__

    server.serve()
    client = make_client(timeout=10)
    assert client.call.loose("1") == "str"
    with pytest.raises(WrongRequest, match="strict: argument 'x'"):
        client.call.strict("1")


def test_describe_answers_with_signatures_docstrings_and_schemas(make_server, make_client, service):
    server = make_server()
    server.add_function(paint)

    @server.add_function("div")
    def divide(x: float, y: float = 1.0) -> float:
        """x divided by y."""
        return x / y

    server.add_function(lambda *values: sum(values), name="total")
    server.serve()
    description = make_client(timeout=10).call(function_name=DESCRIBE)()
    assert description["service"] == service and description["fanout"] is False
    assert description["request_queues"] == [f"rpc_{service}_request"]
    assert set(description["functions"]) == {"paint", "div", "total"}
    div = description["functions"]["div"]
    assert div["signature"] == "(x: float, y: float = 1.0) -> float" and div["doc"] == "x divided by y."
    assert div["parameters"][1] == {
        "name": "y", "kind": "positional_or_keyword", "required": False, "default": 1.0, "schema": {"type": "number"}
    }  # fmt: skip
    assert div["result"] == {"type": "number"} and div["validated"] is True
    assert description["functions"]["total"]["parameters"][0]["schema"] == {}
    where = description["functions"]["paint"]["parameters"][0]["schema"]
    assert where == {"$ref": "#/$defs/Point"} and description["$defs"]["Point"]["required"] == ["x", "y"]


def test_the_describe_command_prints_signatures_and_docstrings(make_server, amqp_url, service, capsys):
    server = make_server()

    @server.add_function
    def add(x: int, y: int) -> int:
        """The sum of x and y."""
        return x + y

    server.add_function(lambda x: x, name="echo")
    server.serve()
    assert main(["describe", service, "--url", amqp_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"service {service}: server {server.name} reading rpc_{service}_request"
    assert lines[1:] == [
        "  add(x: int, y: int) -> int",
        "      The sum of x and y.",
        "  echo(x)  (arguments not checked)",
    ]
    assert main(["describe", service, "--url", amqp_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["functions"]["add"]["result"] == {"type": "integer"}
    assert main(["describe", "nosuchservice", "--url", amqp_url]) == 2
    assert "no service 'nosuchservice'" in capsys.readouterr().err


def shaped(a: int, /, b: int, c: int = 0, *rest: int, d: int, e: int = 0, **extra: int) -> None:
    """Every kind of parameter."""


def plain(a: int, b: int = 0, *, c: int) -> None:
    """No variadic parameters."""


CALL_SHAPES = [
    ((1, 2), {"d": 3}),
    ((1, 2, 3, 4, 5), {"d": 3, "z": 9}),
    ((1,), {"b": 2, "d": 3}),
    ((1, 2), {}),
    ((), {"a": 1, "b": 2, "d": 3}),
    ((1, 2), {"b": 2, "d": 3}),
    ((1,), {"c": 3}),
    ((1, 2, 3), {"c": 3}),
    ((), {"a": 1, "c": 3}),
    ((1,), {"a": 1, "c": 3}),
    ((1,), {"c": 3, "x": 1}),
]


@pytest.mark.parametrize("func", [shaped, plain])
@pytest.mark.parametrize(("args", "kwargs"), CALL_SHAPES)
def test_arguments_are_refused_exactly_when_python_would_refuse_them(func, args, kwargs):
    try:
        func(*args, **kwargs)
    except TypeError:
        assert refusal(func, *args, **kwargs).startswith(f"{func.__name__}: ")  # in inspect.Signature's words
    else:
        assert validated(func, args, kwargs) == (list(args), kwargs)


def test_callables_of_every_kind_can_be_registered_and_described():
    import functools
    import time

    class Scaler:
        def __call__(self, x: int) -> int:
            return 2 * x

    registry = FunctionRegistry()
    registry.add(time.time, "now")  # a builtin without a signature
    registry.add(functools.partial(lambda a, b: a + b, 1), "plus_one")
    registry.add(Scaler(), "scale")
    assert registry.get("now").validator is None  # type: ignore[union-attr]
    assert validated_by(registry, "scale", ["2"]) == "scale: argument 'x': expected int, got str"
    functions, _ = describe_functions(registry.public())
    assert functions["now"]["signature"] == "(*args, **kwargs)"
    assert functions["plus_one"]["signature"] == "(b)"
    assert functions["scale"]["signature"] == "(x: int) -> int"


def validated_by(registry: FunctionRegistry, name: str, args: list) -> str:  # type: ignore[type-arg]
    validator = registry.get(name).validator  # type: ignore[union-attr]
    with pytest.raises(ArgumentMismatch) as caught:
        validator.arguments(args, {})  # type: ignore[union-attr]
    return str(caught.value)


def test_the_documented_describe_output_is_current():
    """docs/contracts.rst shows ``amphora describe math`` for examples/math_server.py."""
    server = import_object("examples.math_server:server")
    text = format_description(describe(server)).replace(server.name, "myhost.4242.a1b2c3")
    page = (Path(__file__).parent.parent / "docs" / "contracts.rst").read_text()
    assert textwrap.indent(text, "    ") in page


def test_describe_tells_fanout_services_and_per_key_queues(make_server, make_client, amqp_url, service, capsys):
    fanout = AmqpRpcFanoutServer(f"{service}_fanout", url=amqp_url, name="fan-1")
    try:
        fanout.add_function(lambda: "ok", name="status")
        fanout.serve()
        assert main(["describe", f"{service}_fanout", "--url", amqp_url]) == 0
        out = capsys.readouterr().out
        assert out.startswith(
            f"fanout service {service}_fanout: server fan-1 reading rpc_{service}_fanout_fanout_fan-1"
        )
    finally:
        fanout.stop()
    server = make_server(consume_default_queue=False)
    server.add_function(lambda: "ok", name="status")
    server.serve()
    server.create_new_request_queue("gpu")
    receiver = server.receive_from_queue("gpu", block=False)
    client = make_client(timeout=10)
    assert client.call(function_name=DESCRIBE, routing_key="gpu")()["request_queues"] == [f"rpc_{service}_queue_gpu"]
    receiver.stop()


def test_type_hints_that_cannot_be_resolved_are_logged_and_not_checked(caplog):
    def later(x: Missing) -> int:  # type: ignore[name-defined]  # noqa: F821
        return x

    with caplog.at_level(logging.WARNING, logger="amphora.validation"):
        assert build_validator("later", later, False) is None
    assert "cannot resolve the type hints" in caplog.text and "Missing" in caplog.text
