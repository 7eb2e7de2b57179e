"""Processes that end without stop(): the requests a server answered are acknowledged (none runs twice), and
what a client sent reaches the broker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_until

EXIT_SCRIPT = Path(__file__).with_name("exit_process.py")
RUNS = 10

pytestmark = pytest.mark.timeout(180)


def script(how: str, end: str, service: str, url: str, argument: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(EXIT_SCRIPT), how, end, service, url, str(argument)])


def exit_status(process: subprocess.Popen, timeout: float = 20) -> int:
    """Wait for the process to end, letting the test's own clients and servers run meanwhile."""
    wait_until(lambda: process.poll() is not None, timeout=timeout)
    return process.returncode


@pytest.mark.parametrize(
    ("how", "end"),
    [("longpoll", "end"), ("longpoll", "os_exit"), ("serve", "end"), ("serve", "sys_exit")],
)
def test_server_script_that_answers_one_call_and_ends_runs_it_once(make_client, amqp_url, service, tmp_path, how, end):
    """``longpoll``/``os_exit`` ends without atexit: receive_from_queue returned only once the ack was sent.
    The others end normally: amphora stops the server at interpreter exit."""
    client = make_client(timeout=10)
    if how == "longpoll":
        client.create_new_request_queue("poll")
    log = tmp_path / "executions.log"
    log.touch()
    for n in range(RUNS):
        process = script(how, end, service, amqp_url, log)
        try:
            assert client.call(routing_key="poll" if how == "longpoll" else None).show(n) == [process.pid, n]
            assert exit_status(process) == 0
        finally:
            process.kill()
            process.wait()
        ran = [int(line.split()[1]) for line in log.read_text().splitlines()]
        assert ran == list(range(n + 1)), f"run {n}: executions {ran}"


@pytest.mark.parametrize("end", ["end", "sys_exit"])
def test_client_script_that_casts_and_ends_delivers_the_cast(make_server, amqp_url, service, end):
    server = make_server()
    shown: list[int] = []
    server.add_function(shown.append, "show")
    server.serve()
    for n in range(RUNS):
        process = script("cast", end, service, amqp_url, n)
        try:
            assert exit_status(process) == 0
        finally:
            process.kill()
            process.wait()
        wait_until(lambda n=n: len(shown) > n, timeout=10)
    assert shown == list(range(RUNS))


def test_server_still_handling_at_exit_waits_at_most_its_exit_timeout(
    make_client, make_server, service, amqp_url, tmp_path
):
    client = make_client(timeout=30)
    result = client.defer(wait_publish=True).show(1)
    log = tmp_path / "executions.log"
    log.touch()
    started = time.monotonic()
    process = script("stuck", "end", service, amqp_url, log)
    try:
        assert exit_status(process) == 0
    finally:
        process.kill()
        process.wait()
    assert time.monotonic() - started < 10  # starting, the handler, exit_timeout=1 and closing; not 60 s
    assert len(log.read_text().splitlines()) == 1
    server = make_server()
    server.add_function(lambda n: "again", "show")
    server.serve()
    assert result.get(timeout=10) == "again"  # not acknowledged: the request went back to the queue


def test_only_servers_and_clients_running_are_stopped_at_exit(make_server, make_client):
    from amphora import exiting

    server, client = make_server(), make_client()
    assert server not in exiting._running  # not served yet
    server.serve()
    assert server in exiting._running and client in exiting._running
    server.stop()
    client.stop()
    assert server not in exiting._running and client not in exiting._running
