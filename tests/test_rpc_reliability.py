"""The reliability contract, with brokers and servers really killed (never mocked)."""

from __future__ import annotations

import collections

import gevent
import pytest

from amphora import AmqpRpcClient, AmqpRpcServer, ReplyQueueLost
from amphora.amqp import connect
from amphora.amqp.errors import NotFound
from helpers import executions, wait_until


def queue_exists(connection, name: str) -> bool:
    try:
        connection.channel().queue_declare(name, passive=True)
    except NotFound:
        return False
    return True


@pytest.mark.timeout(180)
def test_broker_killed_under_load_loses_no_call(private_rabbit_node, service, start_server, execution_log):
    url = private_rabbit_node.url
    start_server(url)
    start_server(url)
    client = AmqpRpcClient(service, url=url, timeout=120)
    results = [client.defer.add(i, i) for i in range(2000)]
    wait_until(lambda: sum(r.ready() for r in results) >= 200, timeout=30)  # kill it mid-stream
    private_rabbit_node.kill()
    gevent.sleep(3)  # the scenario: the broker stays down for three seconds
    private_rabbit_node.start()
    assert [r.get(timeout=120) for r in results] == [2 * i for i in range(2000)]
    counts = collections.Counter(argument for _, _, argument in executions(execution_log))
    assert set(counts) == {str(i) for i in range(2000)}  # at least once each; redeliveries may repeat
    client.stop()


@pytest.mark.timeout(120)
def test_server_killed_mid_request_is_answered_by_another(amqp_url, service, start_server, execution_log):
    servers = {p.pid: p for p in (start_server(amqp_url), start_server(amqp_url))}
    client = AmqpRpcClient(service, url=amqp_url)
    result = client.defer.slow(1.0, "job")
    wait_until(lambda: executions(execution_log))
    first_pid = executions(execution_log)[0][0]
    servers[first_pid].kill()
    assert result.get(timeout=30) == "job"
    runs = executions(execution_log)
    assert [pid for pid, _, _ in runs] == [first_pid, next(pid for pid in servers if pid != first_pid)]
    client.stop()


@pytest.mark.timeout(120)
def test_graceful_stop_under_load_loses_nothing(amqp_url, service, start_server, execution_log):
    stopping = start_server(amqp_url, "--concurrency", "20")
    start_server(amqp_url, "--concurrency", "20")
    client = AmqpRpcClient(service, url=amqp_url)
    results = [client.defer.slow(0.01, str(i)) for i in range(600)]
    wait_until(lambda: sum(r.ready() for r in results) >= 100, timeout=30)
    assert stopping.terminate() == 0  # SIGTERM: prepare_stop, finish running handlers, flush replies
    assert [r.get(timeout=60) for r in results] == [str(i) for i in range(600)]
    counts = collections.Counter(argument for _, _, argument in executions(execution_log))
    assert set(counts) == {str(i) for i in range(600)} and max(counts.values()) == 1  # none ran twice
    client.stop()


@pytest.mark.timeout(120)
def test_calls_made_while_the_broker_is_down_are_sent_in_order_when_it_returns(
    private_rabbit_node, service, start_server, execution_log
):
    url = private_rabbit_node.url
    start_server(url, "--concurrency", "1")  # one at a time: execution order is publish order
    client = AmqpRpcClient(service, url=url)
    assert client.call.add(-1, 0) == -1
    private_rabbit_node.kill()
    results = [client.defer.add(i, 0) for i in range(300)]  # held in the outbox
    private_rabbit_node.start()
    assert [r.get(timeout=60) for r in results] == list(range(300))
    arguments = [int(argument) for _, _, argument in executions(execution_log)]
    assert arguments[1:] == list(range(300))
    client.stop()


@pytest.mark.timeout(60)
def test_replies_wait_for_a_client_that_lost_its_connection(amqp_url, service, start_server):
    start_server(amqp_url)
    client = AmqpRpcClient(service, url=amqp_url)
    client.stop_consumer()  # the client's reply side is gone for a while
    results = [client.defer.add(i, 1) for i in range(50)]
    channel = connect(amqp_url).channel()
    wait_until(lambda: channel.queue_declare(client.reply_queue, passive=True).message_count == 50)
    client.serve()
    assert [r.get(timeout=10) for r in results] == [i + 1 for i in range(50)]
    client.stop()


@pytest.mark.timeout(60)
def test_vanished_reply_queue_fails_pending_calls_at_once(amqp_url, service):
    server = AmqpRpcServer(service, url=amqp_url)
    server.add_function(lambda: gevent.sleep(30), name="hang")
    server.serve()
    client = AmqpRpcClient(service, url=amqp_url)
    result = client.defer.hang()
    connection = connect(amqp_url)
    connection.channel().queue_delete(client.reply_queue)
    with pytest.raises(ReplyQueueLost, match="deleted"):
        result.get(timeout=5)
    # the client declares it again, binds it, then consumes it
    wait_until(lambda: queue_exists(connection, client.reply_queue))
    wait_until(lambda: connection.channel().queue_declare(client.reply_queue, passive=True).consumer_count == 1)
    server.add_function(lambda x: x, name="echo")
    assert client.call.echo(7) == 7  # the client declared its reply queue again and goes on
    client.stop()
    server.stop_consumer()
    server.stop_publisher()
