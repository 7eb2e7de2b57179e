"""Fanout: every fanout server executes every broadcast; call gives the first reply, gather every reply."""

from __future__ import annotations

import collections
import time

import pytest

from amphora import (
    AmqpRpcFanoutServer,
    RemoteException,
    Unroutable,
)
from amphora.amqp import connect
from amphora.amqp.errors import NotFound
from helpers import executions, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def three_servers(amqp_url, start_server):
    return [start_server(amqp_url, "--fanout", "--name", f"node{i}") for i in range(3)]


def test_every_server_executes_a_broadcast(three_servers, make_fanout_client, execution_log):
    client = make_fanout_client()
    assert client.call.add(1, 2) == 3  # the first reply
    wait_until(lambda: len(executions(execution_log)) == 3)
    assert sorted(pid for pid, _, _ in executions(execution_log)) == sorted(p.pid for p in three_servers)


def test_gather_returns_every_servers_reply_by_name(three_servers, make_fanout_client):
    client = make_fanout_client()
    started = time.monotonic()
    replies = client.gather(timeout=10, expect=3).maybe("x")
    assert replies == {"node0": "node0", "node1": "node1", "node2": "node2"}
    assert time.monotonic() - started < 5  # finished once the three came, not at the timeout


def test_gather_without_expect_collects_until_the_timeout(three_servers, make_fanout_client):
    replies = make_fanout_client().gather(timeout=1.5).add(2, 2)
    assert replies == {"node0": 4, "node1": 4, "node2": 4}


def test_gather_carries_remote_exceptions_as_values(three_servers, make_fanout_client):
    replies = make_fanout_client().gather(timeout=10, expect=3).add(1, "x")
    assert set(replies) == {"node0", "node1", "node2"}
    assert all(isinstance(error, RemoteException) and error.error_type == "TypeError" for error in replies.values())


def test_ignore_request_leaves_only_the_other_replies(amqp_url, start_server, make_fanout_client, execution_log):
    start_server(amqp_url, "--fanout", "--name", "ignorer1", "--ignore")
    start_server(amqp_url, "--fanout", "--name", "ignorer2", "--ignore")
    start_server(amqp_url, "--fanout", "--name", "answerer")
    client = make_fanout_client()
    assert client.gather(timeout=2).maybe("x") == {"answerer": "answerer"}
    assert client.call.maybe("y") == "answerer"
    wait_until(lambda: len(executions(execution_log)) == 6)  # the ignoring servers may log after the reply
    counts = collections.Counter(argument for _, function, argument in executions(execution_log))
    assert counts == {"x": 3, "y": 3}  # every server took both, two declined


def test_killed_server_does_not_hang_a_gather(amqp_url, start_server, make_fanout_client, execution_log):
    doomed = start_server(amqp_url, "--fanout", "--name", "doomed")
    start_server(amqp_url, "--fanout", "--name", "survivor")
    client = make_fanout_client()
    result = client.defer(timeout=30).slow(2.0, "job")
    gathering = client.gather(timeout=3)
    wait_until(lambda: len(executions(execution_log)) == 2)
    doomed.kill()
    started = time.monotonic()
    assert gathering.add(1, 1) == {"survivor": 2}
    assert time.monotonic() - started < 4.5
    assert result.get(timeout=10) == "job"


def test_broadcast_with_no_server_fails_at_once(make_fanout_client):
    with pytest.raises(Unroutable):
        make_fanout_client().call.add(1, 1)


def test_unnamed_server_queue_expires_after_it_stops(make_fanout_client, amqp_url, service):
    server = AmqpRpcFanoutServer(service, url=amqp_url, queue_expires=0.5)
    server.add_function(lambda: "ok", name="ping")
    server.serve()
    assert make_fanout_client().call.ping() == "ok"
    server.stop()
    channel = connect(amqp_url).channel()

    def queue_gone() -> bool:
        try:
            channel.queue_declare(f"rpc_{service}_fanout_{server.name}", passive=True)
        except NotFound:
            return True
        return False

    wait_until(queue_gone, timeout=10, interval=1.0)  # asking sooner counts as a use: it would renew it


def test_named_server_gets_broadcasts_sent_while_it_was_away(make_fanout_client, amqp_url, service):
    def start() -> AmqpRpcFanoutServer:
        server = AmqpRpcFanoutServer(service, url=amqp_url, name="stable")
        server.add_function(lambda x: x * 10, name="scale")
        server.serve()
        return server

    start().stop()
    client = make_fanout_client()
    result = client.defer.scale(4)  # no server runs: the named queue holds it
    server = start()
    assert result.get(timeout=10) == 40
    server.stop()
