"""The edges a user meets first (issue 19): a request queue deleted under a server, a broker that is not there."""

from __future__ import annotations

import logging

import pytest

from amphora import AmqpRpcFanoutServer
from amphora.amqp import connect
from amphora.amqp.errors import NotFound
from helpers import wait_until


def consumers(connection, queue: str) -> int:
    """How many consumers ``queue`` has (0 if it does not exist)."""
    try:
        return connection.channel().queue_declare(queue, passive=True).consumer_count
    except NotFound:
        return 0


def warnings_about(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


# --- a deleted request queue (19.2) ----------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_deleted_request_queue_is_declared_again_and_served(
    rabbit_node, amqp_url, make_server, make_client, service, caplog
):
    server = make_server()
    server.add_function(lambda x: x, name="echo")
    server.serve()
    client = make_client()
    assert client.call.echo(1) == 1
    queue = f"rpc_{service}_request"
    connection = connect(amqp_url)
    with caplog.at_level(logging.WARNING, logger="amphora.server"):
        rabbit_node.ctl("delete_queue", queue)
        wait_until(lambda: consumers(connection, queue) == 1, timeout=10)
    assert len(warnings_about(caplog, f"request queue {queue} was deleted")) == 1
    assert client.call(timeout=10).echo(2) == 2  # a client that was running goes on
    assert make_client().call(timeout=10).echo(3) == 3  # and a new one too
    connection.close()


@pytest.mark.timeout(60)
def test_a_fanout_servers_deleted_queue_is_declared_again(amqp_url, make_fanout_client, service, caplog):
    server = AmqpRpcFanoutServer(service, url=amqp_url, name="steady")
    server.add_function(lambda: "here", name="ping")
    server.serve()
    client = make_fanout_client()
    assert client.gather(timeout=5, expect=1).ping() == {"steady": "here"}
    queue = f"rpc_{service}_fanout_steady"
    connection = connect(amqp_url)
    with caplog.at_level(logging.WARNING, logger="amphora.server"):
        connection.channel().queue_delete(queue)
        wait_until(lambda: consumers(connection, queue) == 1, timeout=10)
    assert warnings_about(caplog, f"request queue {queue} was deleted")
    assert client.gather(timeout=5, expect=1).ping() == {"steady": "here"}
    server.stop()
    connection.close()


@pytest.mark.timeout(60)
def test_a_deleted_per_key_queue_still_ends_its_receiver_only(amqp_url, make_server, make_client, service, caplog):
    server = make_server()
    server.add_function(lambda x: x, name="echo")
    server.serve()
    client = make_client()
    client.create_new_request_queue("olga")
    receiver = server.receive_from_queue("olga", block=False)
    with caplog.at_level(logging.WARNING, logger="amphora.server"):
        client.remove_request_queue("olga")
        assert receiver.wait(timeout=10)
    assert not warnings_about(caplog, "was deleted")  # the server's own queue is untouched: no reconnect
    connection = connect(amqp_url)
    assert consumers(connection, f"rpc_{service}_queue_olga") == 0  # and the per-key queue stays gone
    assert client.call(timeout=5).echo(4) == 4
    connection.close()
