"""Dead letters: the refused requests a service's dead-letter queue keeps (bounded), and ``amphora dead``."""

from __future__ import annotations

import logging

import pytest

from amphora import WrongRequest
from amphora.cli import main
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def refuse(client, count: int, secret: str = "s3cret") -> list[str]:
    """Make ``count`` calls the server refuses (no such function); the ids of their requests, in order."""
    ids = []
    for n in range(count):
        with pytest.raises(WrongRequest):
            client.call.nope(n, password=secret)
        ids.append(client._request_ids._prefix + f"{len(ids) + 1:x}")
    return ids


def dead_count(connection, service: str) -> int:
    return connection.channel().queue_declare(f"rpc_{service}_dead", passive=True).message_count


def run_dead(capsys, amqp_url: str, service: str, *options: str) -> tuple[int, str, str]:
    status = main(["dead", service, "--url", amqp_url, *options])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_dead_letter_queue_keeps_the_newest_refusals_only(make_server, make_client, connection, service):
    make_server(dead_letter_limit=3).serve()
    client = make_client()
    refuse(client, 5)
    wait_until(lambda: dead_count(connection, service) == 3)


def test_a_dead_letter_queue_made_with_other_arguments_is_kept(make_server, make_client, connection, service, caplog):
    connection.channel().queue_declare(f"rpc_{service}_dead", durable=True)  # as amphora before the bound
    with caplog.at_level(logging.WARNING, logger="amphora.topology"):
        server = make_server()
        server.add_function(lambda: "up", name="ping")
        server.serve()
    assert make_client().call.ping() == "up"
    assert any("exists with other arguments and is kept" in r.getMessage() for r in caplog.records)


def test_dead_lists_refusals_without_their_arguments_and_leaves_them(
    capsys, amqp_url, make_server, make_client, connection, service
):
    make_server().serve()
    client = make_client()
    ids = refuse(client, 2)
    wait_until(lambda: dead_count(connection, service) == 2)
    status, out, _ = run_dead(capsys, amqp_url, service)
    assert status == 0
    header, *lines = out.splitlines()
    assert header.split() == ["ID", "AGE", "FUNCTION", "CALLER", "REASON"]
    assert [line.split()[0] for line in lines] == ids  # oldest first
    assert all(line.split()[2:4] == ["nope", client.uuid] for line in lines)
    assert all("no function 'nope'" in line for line in lines)
    assert "s3cret" not in out
    assert dead_count(connection, service) == 2  # reading took nothing away

    status, out, _ = run_dead(capsys, amqp_url, service, "--show-args", "--limit", "1")
    assert status == 0 and len(out.splitlines()) == 2
    assert '"password": "s3cret"' in out


def test_dead_requeues_chosen_requests_and_purges(capsys, amqp_url, make_server, make_client, connection, service):
    server = make_server()
    server.serve()
    client = make_client()
    first, second, third = refuse(client, 3)
    wait_until(lambda: dead_count(connection, service) == 3)
    ran = []
    server.add_function(lambda n, password: ran.append(n), name="nope")  # the missing function, deployed now

    assert run_dead(capsys, amqp_url, service, "--requeue", second)[:2] == (
        0,
        f"requeued 1 request(s) to rpc_{service}_request\n",
    )
    wait_until(lambda: ran == [1])
    assert dead_count(connection, service) == 2

    status, _, err = run_dead(capsys, amqp_url, service, "--requeue", "unknown-id")
    assert status == 2 and "no dead letter with id unknown-id" in err
    assert dead_count(connection, service) == 2

    assert run_dead(capsys, amqp_url, service, "--purge")[:2] == (0, f"purged 2 dead letter(s) of {service}\n")
    assert dead_count(connection, service) == 0
    assert ran == [1]


def test_dead_of_a_service_without_servers_says_so(capsys, amqp_url, service):
    status, _, err = run_dead(capsys, amqp_url, service)
    assert status == 2 and f"no dead-letter queue rpc_{service}_dead" in err
