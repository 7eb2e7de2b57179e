"""Casts, parallel calls, priorities, handler time limits, compression and the handler context."""

from __future__ import annotations

import threading
import time
import uuid
import zlib

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Queue

from amphora import HandlerTimeout, RemoteException, RequestMayHaveRun, Unroutable, parallel
from amphora.amqp import Properties, connect
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def test_cast_runs_once_and_is_confirmed(make_server, make_client):
    server = make_server()
    seen: Queue = Queue()
    server.add_function(seen.put, name="note")
    server.serve()
    client = make_client()
    assert client.cast.note("hello").get(timeout=10) is None  # the broker has it
    assert seen.get(timeout=10) == "hello"
    assert client.call.note("sync") is None  # calls still work beside casts
    assert seen.get(timeout=10) == "sync" and seen.empty()
    with pytest.raises(Unroutable):
        client.cast(routing_key="nobody").note("lost").get(timeout=10)


def test_parallel_gives_results_in_order(make_server, make_client):
    server = make_server()
    server.add_function(lambda x, y: x / y, name="div")
    server.serve()
    client = make_client()
    assert parallel(client.defer.div(1, 2), client.defer.div(9, 3)) == [0.5, 3.0]
    values = parallel(client.defer.div(4, 2), client.defer.div(1, 0), return_exceptions=True)
    assert values[0] == 2.0 and isinstance(values[1], RemoteException)
    with pytest.raises(RemoteException, match="ZeroDivisionError"):
        parallel(client.defer.div(1, 0), client.defer.div(1, 1))


def test_high_priority_calls_overtake_queued_low_ones(make_server, make_client):
    server = make_server(concurrency=1, max_priority=10)
    order = []
    release = Event()
    server.add_function(lambda: release.wait(), name="block")
    server.add_function(order.append, name="record")
    server.serve()
    client = make_client(max_priority=10)
    blocker = client.defer.block()
    wait_until(lambda: server._running)  # the one slot is taken: everything else queues
    low = [client.defer(wait_publish=True).record(f"low{i}") for i in range(5)]
    high = client.defer(priority=9, wait_publish=True).record("high")
    release.set()
    for result in [blocker, *low, high]:
        result.get(timeout=10)
    assert order[0] == "high" and sorted(order[1:]) == [f"low{i}" for i in range(5)]


def test_time_limit_interrupts_a_handler_and_says_so(make_server, make_client):
    server = make_server(time_limit=5)
    finished = []

    @server.add_function(time_limit=0.3)
    def stuck():
        gevent.sleep(10)
        finished.append("stuck")

    @server.add_function
    def quick():
        return "ok"

    server.serve()
    client = make_client()
    started = time.monotonic()
    with pytest.raises(HandlerTimeout, match="0.3"):
        client.call(timeout=20).stuck()
    assert time.monotonic() - started < 3 and not finished
    assert client.call.quick() == "ok"


def test_time_limit_of_a_thread_ends_the_call_not_the_thread(make_server, make_client):
    server = make_server(threads=True, time_limit=0.2)
    done = threading.Event()
    server.add_function(lambda: (time.sleep(0.6), done.set()), name="blocking")
    server.serve()
    with pytest.raises(HandlerTimeout):
        make_client().call.blocking()
    assert not done.is_set()
    assert done.wait(5)  # the thread could not be interrupted: it ran to its end


def test_large_bodies_are_gzipped_both_ways(make_server, make_client, spy, service):
    server = make_server(compress_threshold=1000)
    server.add_function(lambda text: text * 2, name="double")
    server.serve()
    client = make_client(compress_threshold=1000)
    requests = spy(f"rpc_{service}_request")
    replies = spy(f"rpc_{service}_response", client.uuid)
    text = "amphora " * 20_000
    assert client.call.double(text) == text * 2
    request, reply = requests.get(timeout=5), replies.get(timeout=5)
    assert request.properties.content_encoding == "gzip" and len(request.body) < 5_000
    assert reply.properties.content_encoding == "gzip" and len(reply.body) < 5_000
    assert client.call.double("small") == "smallsmall"
    assert requests.get(timeout=5).properties.content_encoding is None


def test_gzip_bomb_is_refused_and_the_server_serves_on(make_server, make_client, amqp_url, service, spy):
    server = make_server(max_request_size=1_000_000)
    server.add_function(lambda: "alive", name="ping")
    server.serve()
    client = make_client()
    replies = spy(f"rpc_{service}_response", client.uuid)
    dead = spy(f"rpc_{service}_dead")
    bomb = zlib.compress(b'{"func": "ping", "args": [' + b" " * 50_000_000 + b"]}", 9, wbits=31)
    assert len(bomb) < 100_000
    properties = Properties(
        message_id=uuid.uuid4().hex, reply_to=client.uuid, content_type="application/json", content_encoding="gzip"
    )
    connect(amqp_url).channel().basic_publish(bomb, f"rpc_{service}_request", "", properties)
    reply = replies.get(timeout=10)
    assert reply.properties.headers["x-amphora-error"] == "wrong-request"
    assert b"over the limit" in reply.body
    assert "over the limit" in dead.get(timeout=10).properties.headers["x-amphora-reason"]
    assert client.call.ping() == "alive"


def test_handler_context_sees_the_request_and_sets_reply_headers(make_server, make_client, service, spy):
    server = make_server(settings={"greeting": "hello"})

    @server.add_function(context=True)
    def greet(ctx, name):
        ctx.reply_headers["x-greeted"] = name
        return f"{ctx.server.settings['greeting']} {name} ({ctx.function}, {ctx.headers['x-trace']})"

    server.serve()
    client = make_client()
    replies = spy(f"rpc_{service}_response", client.uuid)
    assert client.call(headers={"x-trace": "t1"}).greet("ann") == "hello ann (greet, t1)"
    assert replies.get(timeout=5).properties.headers["x-greeted"] == "ann"


def test_server_serves_again_after_stop(make_server, make_client):
    server = make_server()
    server.add_function(lambda: "up", name="ping")
    server.serve()
    client = make_client()
    assert client.call.ping() == "up"
    server.stop()
    server.serve()
    assert client.call(timeout=10).ping() == "up"


def test_quorum_queues_serve_like_classic_ones(make_server, make_client, amqp_url, service):
    server = make_server(queue_type="quorum")
    server.add_function(lambda x: -x, name="negate")
    server.serve()
    client = make_client(queue_type="quorum")
    assert client.call.negate(5) == -5
    server.stop()
    with pytest.raises(RequestMayHaveRun):  # message TTL and dead-lettering back to the caller work too
        client.call(timeout=0.5).negate(1)
