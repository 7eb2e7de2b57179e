"""``amphora asyncapi``: the AsyncAPI 3.0 document of a service, checked by the AsyncAPI project's own parser
(npm's @asyncapi/parser, installed into tests/asyncapi/node_modules on first use)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typed_service import paint

from amphora import AmqpRpcFanoutServer, AmqpRpcServer
from amphora.asyncapi import asyncapi_document
from amphora.cli import import_object, main
from amphora.config import broker_parameters

pytestmark = pytest.mark.timeout(120)

PARSER = Path(__file__).parent / "asyncapi"
BROKERS = broker_parameters("amqp://guest:guest@rabbit.example:5672/prod")


@pytest.fixture(scope="session")
def asyncapi_parser() -> Path:
    """The directory of validate.mjs, with @asyncapi/parser installed (npm install, once)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed to validate AsyncAPI documents: apt-get install nodejs npm")
    if not (PARSER / "node_modules" / "@asyncapi" / "parser").is_dir():
        command = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run(command, cwd=PARSER, check=True, timeout=600)
    return PARSER


def parse(parser: Path, tmp_path: Path, *documents: dict) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    """The parser's exit status and diagnostics for ``documents``."""
    files = []
    for index, document in enumerate(documents):
        files.append(tmp_path / f"document{index}.json")
        files[-1].write_text(json.dumps(document))
    done = subprocess.run(
        ["node", "validate.mjs", *map(str, files)], cwd=parser, capture_output=True, text=True, timeout=60
    )
    assert not done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def typed_server() -> AmqpRpcServer:
    server = AmqpRpcServer("paint")
    server.add_function(paint)
    server.add_function(lambda label, *values, **weights: label, name="untyped")
    return server


def fanout_server() -> AmqpRpcFanoutServer:
    server = AmqpRpcFanoutServer("workers")
    server.add_function(lambda: "ok", name="status")
    return server


def math_document() -> dict:  # type: ignore[type-arg]
    return asyncapi_document(import_object("examples.math_server:server"), BROKERS)


def test_the_parser_accepts_the_documents_of_typed_untyped_and_fanout_services(asyncapi_parser, tmp_path):
    documents = [math_document(), asyncapi_document(typed_server(), BROKERS), asyncapi_document(fanout_server(), [])]
    status, diagnostics = parse(asyncapi_parser, tmp_path, *documents)
    assert status == 0 and not [d for d in diagnostics if d["severity"] < 2], diagnostics


def test_the_parser_would_catch_a_broken_document(asyncapi_parser, tmp_path):
    document = math_document()
    del document["channels"]["replies"]["messages"]["add.reply"]  # the add operation's reply refers to it
    status, diagnostics = parse(asyncapi_parser, tmp_path, document)
    assert status == 1 and any(d["severity"] == 0 for d in diagnostics)


def test_one_operation_per_function_with_its_reply_and_the_error_reply():
    document = math_document()
    assert set(document["operations"]) == {"add", "sub", "multiply", "div", "sum_numbers", "hypotenuse"}
    add = document["operations"]["add"]
    assert add["action"] == "receive" and add["summary"] == "The sum of x and y."
    assert add["reply"]["messages"] == [
        {"$ref": "#/channels/replies/messages/add.reply"},
        {"$ref": "#/channels/replies/messages/amphora.error"},
    ]
    request = document["components"]["messages"]["add.request"]["payload"]["properties"]
    number = {"anyOf": [{"type": "integer"}, {"type": "number"}]}
    assert request["func"] == {"const": "add"} and request["args"]["items"] == [number, number]
    assert request["kwargs"]["properties"] == {"x": number, "y": number}
    assert document["components"]["messages"]["sum_numbers.request"]["payload"]["properties"]["args"] == {
        "type": "array",
        "items": number,
    }
    assert document["servers"]["broker"] == {
        "host": "rabbit.example:5672", "pathname": "/prod", "protocol": "amqp", "protocolVersion": "0.9.1"
    }  # fmt: skip


def test_per_key_queues_are_a_parameter_of_the_request_channel_and_fanout_has_none():
    requests = math_document()["channels"]["requests"]
    assert (
        requests["address"] == "{routingKey}"
        and "rpc_math_queue_{label}" in requests["parameters"]["routingKey"]["description"]
    )
    assert requests["bindings"]["amqp"]["exchange"]["name"] == "rpc_math_request"
    assert requests["bindings"]["amqp"]["exchange"]["vhost"] == "prod"  # the broker's, as in BROKERS
    fanout = asyncapi_document(fanout_server(), [])["channels"]["requests"]
    assert fanout["address"] is None and fanout["bindings"]["amqp"]["exchange"]["type"] == "fanout"


def test_the_command_writes_the_document(tmp_path, capsys):
    output = tmp_path / "math.json"
    assert (
        main(["asyncapi", "examples.math_server:server", "-o", str(output), "--url", "amqp://rabbit.example/prod"]) == 0
    )
    written = json.loads(output.read_text())
    assert written["operations"].keys() == math_document()["operations"].keys()
    assert written["servers"]["broker"]["host"] == "rabbit.example:5672"


def test_the_documented_math_document_is_current():
    """docs/math.asyncapi.json is what ``amphora asyncapi examples.math_server:server`` writes."""
    documented = json.loads((Path(__file__).parent.parent / "docs" / "math.asyncapi.json").read_text())
    assert documented == asyncapi_document(
        import_object("examples.math_server:server"), broker_parameters("amqp://localhost:5672/")
    )
