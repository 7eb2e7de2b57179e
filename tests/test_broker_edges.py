"""The edges a user meets first (issue 19): a request queue deleted under a server, a broker that is not there."""

from __future__ import annotations

import logging
import socket
import time

import gevent
import pytest

import amphora.link
from amphora import AmqpRpcClient, AmqpRpcFanoutServer, AmqpRpcServer, BrokerUnavailable, NoResult
from amphora.amqp import connect
from amphora.amqp.errors import NotFound
from amphora.testing import free_port
from helpers import wait_until


def consumers(connection, queue: str) -> int:
    """How many consumers ``queue`` has (0 if it does not exist)."""
    try:
        return connection.channel().queue_declare(queue, passive=True).consumer_count
    except NotFound:
        return 0


def warnings_about(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """The tests given a broker run on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


# --- a deleted request queue (19.2) ----------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.rabbitmq_only("deletes the queue with rabbitmqctl")
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


# --- an unreachable broker (19.5) ------------------------------------------------------------------


def nobody_at(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


@pytest.mark.timeout(60)
def test_a_client_without_a_broker_starts_at_once_and_its_calls_say_why(service):
    port = free_port()
    started = time.monotonic()
    client = AmqpRpcClient(service, url=nobody_at(port), connection_timeout=3)
    assert time.monotonic() - started < 3  # at most one connection timeout (refused: at once)
    with pytest.raises(BrokerUnavailable) as info:
        client.call(timeout=1).add(1, 2)
    assert isinstance(info.value, NoResult)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message and "guest:guest" not in message
    client.stop()


@pytest.mark.timeout(60)
def test_a_broker_that_never_answers_costs_one_connection_timeout_and_calls_say_why(service):
    with socket.socket() as blackhole:  # the kernel accepts connections; nothing ever answers on them
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        port = blackhole.getsockname()[1]
        client = AmqpRpcClient(service, url=nobody_at(port), connection_timeout=2, autostart=False)
        started = time.monotonic()
        starting = gevent.spawn(client.serve)
        with pytest.raises(BrokerUnavailable, match=rf"no answer yet from \S*127\.0\.0\.1:{port}"):
            client.call(timeout=0.5).add(1, 2)  # while the first attempt waits for an answer
        starting.get(timeout=10)
        assert time.monotonic() - started < 2.5  # both links together: one timeout, not one each
        with pytest.raises(BrokerUnavailable, match=rf"no answer from \S*127\.0\.0\.1:{port}\S* in 2"):
            client.call(timeout=0.5).add(1, 2)  # once an attempt failed: its error
        client.stop()


@pytest.mark.timeout(60)
def test_a_server_that_cannot_connect_logs_an_error_then_at_a_bounded_rate(service, caplog, monkeypatch):
    monkeypatch.setattr(amphora.link, "FAILURE_REPORT_INTERVAL", 1.5, raising=False)
    port = free_port()
    server = AmqpRpcServer(service, url=nobody_at(port))
    link = f"{service} server consumer"

    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.ERROR and r.getMessage().startswith(link)]

    with caplog.at_level(logging.INFO, logger="amphora.link"):
        started = time.monotonic()
        server.serve()
        assert time.monotonic() - started < 2
        wait_until(lambda: len(errors()) >= 3, timeout=15)
        attempts = server.transport.consumer.failures
    reports = errors()
    assert f"127.0.0.1:{port}" in reports[0].getMessage() and "Connection refused" in reports[0].getMessage()
    assert all("still cannot connect after" in r.getMessage() for r in reports[1:])
    gaps = [b.created - a.created for a, b in zip(reports, reports[1:], strict=False)]
    assert min(gaps) >= 1.4  # at most one report per interval...
    assert attempts > len(reports)  # ...while it kept trying more often
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]
    server.stop()


@pytest.mark.timeout(180)
def test_calls_made_while_the_broker_is_stopped_go_through_once_it_starts(private_rabbit_node, service):
    private_rabbit_node.stop()
    url = private_rabbit_node.url
    started = time.monotonic()
    server = AmqpRpcServer(service, url=url, connection_timeout=3)
    server.add_function(lambda x: x * 2, name="double")
    server.serve()
    client = AmqpRpcClient(service, url=url, connection_timeout=3)
    assert time.monotonic() - started < 6  # one connection timeout each, at most
    results = [client.defer(timeout=120).double(i) for i in range(100)]
    private_rabbit_node.start()
    assert [r.get(timeout=120) for r in results] == [2 * i for i in range(100)]
    client.stop()
    server.stop()
