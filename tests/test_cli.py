"""The ``amphora`` command: call, inspect, serve, broker and the help of each subcommand."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import gevent
import pytest
from gevent import subprocess

from amphora import AmqpRpcFanoutServer
from amphora.amqp import connect
from amphora.amqp.errors import BrokerUnreachable, NotFound
from amphora.cli import main
from amphora.testing import free_port
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)

SUBCOMMANDS = ["serve", "call", "inspect", "dead", "describe", "asyncapi", "broker"]


def amphora_command(*arguments: str, module: str = "amphora.cli") -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def run_main(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """Run ``amphora ARGUMENTS`` in this process: exit status, stdout, stderr."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def math_server(make_server):
    server = make_server()

    @server.add_function
    def add(x, y):
        return x + y

    @server.add_function
    def echo(*args, **kwargs):
        return [list(args), kwargs]

    @server.add_function
    def div(x, y):
        return x / y

    server.serve()
    return server


# --- call ---------------------------------------------------------------------------------------


def test_call_prints_the_result_as_json(capsys, amqp_url, service, math_server):
    assert run_main(capsys, "call", service, "add", "2", "3", "--url", amqp_url) == (0, "5\n", "")


def test_call_parses_arguments_as_json_or_plain_strings(capsys, amqp_url, service, math_server):
    status, out, _ = run_main(
        capsys, "call", service, "echo", "1", "hello", '"2"', '{"a": [null]}', "--kwargs", '{"k": true}',
        "--url", amqp_url,
    )  # fmt: skip
    assert status == 0
    assert json.loads(out) == [[1, "hello", "2", {"a": [None]}], {"k": True}]


def test_call_takes_the_broker_from_the_environment(amqp_url, service, math_server):
    result = subprocess.run(
        amphora_command("call", service, "add", "[1]", "[2]"),
        env={**os.environ, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "[1, 2]\n", "")


def test_remote_error_exits_1_with_its_type_and_arguments(capsys, amqp_url, service, math_server):
    assert run_main(capsys, "call", service, "div", "1", "0", "--url", amqp_url) == (
        1,
        "",
        "ZeroDivisionError: division by zero\n",
    )


def test_unknown_function_exits_1(capsys, amqp_url, service, math_server):
    status, out, err = run_main(capsys, "call", service, "nope", "--url", amqp_url)
    assert (status, out) == (1, "")
    assert err.startswith("WrongRequest: no function 'nope'")


def test_handler_past_its_time_limit_exits_1(capsys, amqp_url, service, make_server):
    server = make_server(time_limit=0.1)
    server.add_function(lambda: gevent.sleep(5), name="stuck")
    server.serve()
    status, _, err = run_main(capsys, "call", service, "stuck", "--url", amqp_url)
    assert status == 1 and err.startswith("HandlerTimeout: ")


def test_expired_call_exits_2_with_one_line(capsys, amqp_url, service):
    status, out, err = run_main(
        capsys, "call", service, "add", "1", "2", "--timeout", "0.3", "--wait", "--url", amqp_url
    )
    assert (status, out) == (2, "")
    assert err.startswith("RequestMayHaveRun: ") and err.count("\n") == 1


def test_unroutable_call_exits_2(capsys, amqp_url, service, math_server):
    status, _, err = run_main(capsys, "call", service, "add", "1", "2", "--routing-key", "nowhere", "--url", amqp_url)
    assert (status, err) == (2, "Unroutable: no queue for routing key 'nowhere' of add\n")


def test_fanout_call_without_servers_exits_2(capsys, amqp_url, service):
    status, _, err = run_main(capsys, "call", service, "add", "1", "2", "--fanout", "--wait", "--url", amqp_url)
    assert (status, err) == (2, f"Unroutable: no fanout server of {service} is running\n")


def test_call_to_an_unknown_service_fails_at_once_and_creates_nothing(capsys, amqp_url, service, connection):
    status, out, err = run_main(capsys, "call", service, "add", "1", "2", "--url", amqp_url)
    assert (status, out) == (2, "")
    assert f"amphora: no service {service!r} on this broker" in err and "--wait" in err
    channel = connection.channel()
    with pytest.raises(NotFound):
        channel.exchange_declare(f"rpc_{service}_request", passive=True)


def test_call_with_no_server_running_fails_at_once(capsys, amqp_url, service, make_client):
    make_client()  # the service's exchanges and request queue exist, but nobody consumes
    status, _, err = run_main(capsys, "call", service, "add", "1", "2", "--url", amqp_url)
    assert status == 2
    assert err.startswith(f"amphora: no server of {service!r} is running (0 request(s) wait in rpc_{service}_request)")


def test_fanout_options_on_a_service_that_is_not_fanout_are_refused(capsys, amqp_url, service, math_server):
    status, _, err = run_main(capsys, "call", service, "add", "1", "2", "--gather", "--url", amqp_url)
    assert (status, err) == (
        2,
        f"amphora: {service!r} is not a fanout service: call it without --fanout and --gather\n",
    )


def test_a_fanout_service_called_without_fanout_is_refused(capsys, amqp_url, service):
    server = AmqpRpcFanoutServer(service, url=amqp_url)
    server.serve()
    try:
        status, _, err = run_main(capsys, "call", service, "add", "1", "2", "--url", amqp_url)
    finally:
        server.stop()
    assert (status, err) == (2, f"amphora: {service!r} is a fanout service: call it with --fanout or --gather\n")


def test_a_mistyped_function_gets_a_suggestion(capsys, amqp_url, service, math_server):
    status, _, err = run_main(capsys, "call", service, "ad", "1", "2", "--url", amqp_url)
    assert status == 1 and err.startswith(f"WrongRequest: no function 'ad' in service {service!r}; did you mean 'add'?")


def test_results_print_as_utf8_not_escapes(capsys, amqp_url, service, math_server):
    assert run_main(capsys, "call", service, "echo", "café", "--url", amqp_url) == (0, '[["café"], {}]\n', "")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["[1"], "'[1' looks like JSON but is not"),
        (["12ab"], "'12ab' looks like JSON but is not"),
        (["NaN"], "'NaN': NaN is not a JSON number"),
        (["1e400"], "'1e400': 1e400 is too large for a JSON number"),
        (["--kwargs", '{"x": Infinity}'], "not valid JSON: Infinity is not a JSON number"),
        (["--timeout", "-1"], "must be a number of seconds above 0, not -1"),
        (["--timeout", "0"], "must be a number of seconds above 0, not 0"),
        (["--gather", "--expect", "0"], "must be at least 1, not 0"),
    ],
)
def test_arguments_are_checked_strictly_before_anything_is_sent(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["call", "math", "f", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_arguments_do_not_include_the_optional_args(capsys):
    with pytest.raises(SystemExit):
        main(["call", "math"])
    assert capsys.readouterr().err.rstrip().endswith("the following arguments are required: function")


def test_unreachable_broker_exits_2_without_traceback(capsys):
    status, out, err = run_main(capsys, "call", "math", "add", "--url", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert (status, out) == (2, "")
    assert err.startswith("BrokerUnreachable: cannot reach the broker") and err.count("\n") == 1


def test_gather_prints_each_servers_reply(capsys, amqp_url, service):
    server = AmqpRpcFanoutServer(service, url=amqp_url, name="only")
    server.add_function(lambda x, y: x + y, name="add")
    server.serve()
    try:
        status, out, _ = run_main(
            capsys, "call", service, "add", "1", "2", "--gather", "--expect", "1", "--url", amqp_url
        )
    finally:
        server.stop()
    assert (status, json.loads(out)) == (0, {"only": 3})


# --- inspect ------------------------------------------------------------------------------------


def table_rows(out: str) -> dict[tuple[str, str], list[str]]:
    """``{(kind, name): [status, messages, consumers]}`` from inspect's table."""
    header, *lines = out.splitlines()
    assert header.split() == ["ROLE", "KIND", "NAME", "STATUS", "MESSAGES", "CONSUMERS"]
    return {tuple(line.split()[-5:-3]): line.split()[-3:] for line in lines}  # type: ignore[misc]


def test_inspect_shows_what_exists_with_counts(capsys, amqp_url, service, make_client):
    client = make_client()
    for n in range(2):
        client.defer(wait_publish=True).add(n, n)
    status, out, err = run_main(
        capsys, "inspect", service, "--queue", "gpu", "--reply-queue", client.reply_queue, "--url", amqp_url
    )
    assert status == 0
    rows = table_rows(out)
    assert rows[("queue", f"rpc_{service}_request")] == ["exists", "2", "0"]
    assert rows[("queue", f"rpc_{service}_dead")] == ["missing", "-", "-"]  # servers declare it
    assert rows[("exchange", f"rpc_{service}_request")] == ["exists", "-", "-"]
    assert rows[("exchange", f"rpc_{service}_events")] == ["exists", "-", "-"]
    assert rows[("queue", f"rpc_{service}_queue_gpu")] == ["missing", "-", "-"]
    assert rows[("queue", client.reply_queue)] == ["exists", "0", "1"]
    assert "management plugin" in err


# --- serve --------------------------------------------------------------------------------------

SERVER_MODULE = """\
import sys
import gevent
from amphora import AmqpRpcServer

def make(url=None, concurrency=100):
    server = AmqpRpcServer({service!r}, url=url, concurrency=concurrency)

    @server.add_function
    def add(x, y):
        return x + y

    @server.add_function
    def slow():
        print("started", flush=True)
        gevent.sleep(0.5)
        return server.concurrency

    return server

server = make()
"""


@pytest.fixture
def server_module(tmp_path: Path, service: str) -> str:
    """A module ``{service}_app`` in ``tmp_path`` with a factory ``make`` and a built ``server``."""
    name = f"{service}_app"
    (tmp_path / f"{name}.py").write_text(SERVER_MODULE.format(service=service))
    return name


def test_serve_calls_a_factory_with_the_options_and_stops_gracefully_on_sigterm(
    tmp_path, amqp_url, service, server_module, make_client
):
    process = subprocess.Popen(
        amphora_command("serve", f"{server_module}:make", "--url", amqp_url, "--concurrency", "7"),
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "AMQP_URL"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        client = make_client(timeout=20)
        assert client.call.add(2, 3) == 5
        slow = client.defer.slow()
        assert process.stdout.readline() == "started\n"
        process.send_signal(signal.SIGTERM)
        assert slow.get() == 7  # the running request finished and its reply went out
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_serve_runs_a_built_server_with_the_broker_from_the_environment(tmp_path, amqp_url, server_module, make_client):
    process = subprocess.Popen(
        amphora_command("serve", f"{server_module}:server", "--log-level", "warning"),
        cwd=tmp_path,
        env={**os.environ, "AMQP_URL": amqp_url},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert make_client(timeout=20).call.add(1, 1) == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == ""
    finally:
        process.kill()
        process.wait()


def test_serve_does_not_announce_a_server_stopped_while_it_connected(make_server):
    server = make_server()
    connect = server.serve

    def connect_then_signal() -> None:
        connect()
        server.stop()  # what SIGTERM during the connection does

    server.serve = connect_then_signal  # type: ignore[method-assign]
    announced = []
    server.serve_forever(signals=(), on_ready=lambda: announced.append(True))
    assert announced == []


def health(port: int) -> tuple[int, str]:
    """``GET /health`` of a local endpoint: status and text (0 if nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_serve_health_port_says_whether_the_server_serves(tmp_path, private_rabbit_node, server_module):
    port = free_port()
    url = private_rabbit_node.url
    process = subprocess.Popen(
        amphora_command("serve", f"{server_module}:make", "--url", url, "--health-port", str(port)),
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: health(port)[0] == 200, timeout=30)
        assert health(port)[1].startswith("serving ")
        private_rabbit_node.kill()
        wait_until(lambda: health(port)[0] == 503, timeout=30)
        assert "not connected to the broker" in health(port)[1]
        private_rabbit_node.start()
        wait_until(lambda: health(port)[0] == 200, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_server_serving_is_true_only_between_serve_and_stop(make_server):
    server = make_server()
    assert not server.serving
    server.serve()
    assert server.serving
    server.stop()
    assert not server.serving


def test_serve_refuses_options_a_built_server_cannot_take(capsys, monkeypatch, tmp_path, server_module):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    status, _, err = run_main(capsys, "serve", f"{server_module}:server", "--concurrency", "3")
    assert status == 2
    assert "--concurrency cannot apply" in err and "a server built already" in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "expected MODULE:OBJECT"),
        ("no_such_module_xyz:server", "no module named 'no_such_module_xyz'"),
        ("json:nothing", "json has no 'nothing'"),
        ("json:decoder.JSONDecoder", "returned a JSONDecoder, not an AmqpRpcServer"),
        ("builtins:dict", "builtins:dict is a type: expected an AmqpRpcServer or a function returning one"),
    ],
)
def test_serve_explains_a_wrong_target(capsys, target, message):
    status, _, err = run_main(capsys, "serve", target)
    assert status == 2 and message in err


# --- broker -------------------------------------------------------------------------------------


def test_broker_prints_a_url_to_connect_to_and_stops_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        amphora_command("broker", "--port", str(port)), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        url = process.stdout.readline().strip()
        assert url == f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        assert process.stdout.readline().strip() == f"export AMQP_URL={url}"
        connect(url).close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
        with pytest.raises(BrokerUnreachable):
            connect(url, connection_timeout=5).close()
    finally:
        process.kill()
        process.wait()


def test_broker_refuses_a_port_in_use():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = subprocess.run(
            amphora_command("broker", "--port", str(port)), capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(capsys, subcommand):
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith(f"usage: amphora {subcommand}")
    assert f"examples:\n  amphora {subcommand}" in out


def test_python_m_amphora_lists_the_subcommands():
    result = subprocess.run(amphora_command("--help", module="amphora"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert all(f"    {name} " in result.stdout for name in SUBCOMMANDS)


def test_a_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
