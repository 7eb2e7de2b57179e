"""Handlers and callers that misbehave: the server and the client keep their promises anyway."""

from __future__ import annotations

import logging

import gevent
import pytest
from gevent.queue import Queue

from amphora import MsgpackSerializer, OutboxFull, RemoteException
from amphora.amqp import Properties, connect
from helpers import Occupancy, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def test_handler_escaping_with_a_base_exception_is_answered(make_server, make_client):
    server = make_server()

    @server.add_function
    def own_timeout():
        with gevent.Timeout(0.01):
            gevent.sleep(1)

    @server.add_function
    def exits():
        raise SystemExit(3)

    server.add_function(lambda: "alive", name="ping")
    server.serve()
    client = make_client()
    with pytest.raises(RemoteException, match="Timeout"):
        client.call(timeout=10).own_timeout()
    with pytest.raises(RemoteException) as info:
        client.call(timeout=10).exits()
    assert info.value.error_type == "SystemExit" and info.value.args == (3,)
    assert client.call.ping() == "alive"


def test_unencodable_call_options_fail_the_call_and_leave_nothing_behind(make_server, make_client):
    server = make_server()
    server.add_function(lambda: "alive", name="ping")
    server.serve()
    client = make_client()
    with pytest.raises((ValueError, TypeError)):
        client.call(priority=300).ping()
    with pytest.raises((ValueError, TypeError)):
        client.call(headers={"odd": object()}).ping()
    assert len(client.transport.outbox) == 0
    assert client.call.ping() == "alive"


def test_reserved_headers_are_refused_and_reply_headers_cannot_pose_as_amphoras(make_server, make_client, spy):
    server = make_server()

    @server.add_function(context=True)
    def pose(ctx):
        ctx.reply_headers.update({"x-amphora-server": "impostor", "x-mine": 1})
        return "ok"

    server.serve()
    client = make_client()
    with pytest.raises(ValueError, match="x-amphora-cast"):
        client.call(headers={"x-amphora-cast": True}).pose()
    replies = spy(client.topology.response_exchange, client.uuid)
    assert client.call.pose() == "ok"
    headers = replies.get(timeout=5).properties.headers
    assert headers["x-amphora-server"] == server.name and headers["x-mine"] == 1


def test_failed_casts_are_logged(make_server, make_client, caplog):
    server = make_server()
    server.add_function(lambda: 1 / 0, name="broken")
    server.serve()
    with caplog.at_level(logging.WARNING, logger="amphora.server"):
        make_client().cast.broken().get(timeout=10)
        wait_until(lambda: "cast of broken failed" in caplog.text)


def test_concurrency_bounds_handlers_across_every_queue(make_server, make_client):
    server = make_server(concurrency=2)
    work = Occupancy(0.05)
    server.add_function(work, name="work")
    server.serve()
    server.create_new_request_queue("side")
    server.receive_from_queue("side", block=False)
    client = make_client()
    results = [client.defer(routing_key=key).work() for key in ("", "side") * 6]
    for result in results:
        result.get(timeout=20)
    assert work.peak == 2


def test_events_are_decoded_by_their_own_content_type(make_client):
    publisher, subscriber = make_client(serializer=MsgpackSerializer), make_client()
    events: Queue = Queue()
    subscriber.subscribe("bin.*", lambda topic, data: events.put(data))
    publisher.publish("bin.x", b"\x00\xff").get(timeout=10)
    assert events.get(timeout=10) == b"\x00\xff"


def test_tracebacks_only_when_the_server_sends_them(make_server, make_client):
    def fail() -> None:
        raise KeyError("deep")

    quiet, verbose = make_server(), make_server(tracebacks=True, consume_default_queue=False)
    quiet.add_function(fail)
    verbose.add_function(fail)
    quiet.serve()
    verbose.serve()
    verbose.create_new_request_queue("verbose")
    verbose.receive_from_queue("verbose", block=False)
    client = make_client()
    with pytest.raises(RemoteException) as info:
        client.call.fail()
    assert info.value.traceback is None
    with pytest.raises(RemoteException) as info:
        client.call(routing_key="verbose").fail()
    assert "in fail" in info.value.traceback and "KeyError: 'deep'" in info.value.traceback


def test_priority_without_priority_queues_is_refused(make_client):
    with pytest.raises(ValueError, match="max_priority"):
        make_client().call(priority=5).anything()


def test_unencodable_arguments_raise_at_once_and_leave_no_pending_call(make_client):
    client = make_client()
    with pytest.raises(TypeError):
        client.defer.anything(object())
    assert not client._pending


def test_replies_only_count_from_the_reply_exchange(make_server, make_client, amqp_url):
    server = make_server()
    server.add_function(lambda: gevent.sleep(0.5) or "real", name="slow")
    server.serve()
    client = make_client()
    result = client.defer.slow()
    (request_id,) = client._pending
    forged = Properties(correlation_id=request_id, headers={"x-amphora-server": "forger"})
    connect(amqp_url).channel().basic_publish(b'{"result": "forged"}', "", client.reply_queue, forged)
    assert result.get(timeout=10) == "real"


def test_handler_reply_headers_that_cannot_be_sent_become_an_error_reply(make_server, make_client):
    server = make_server()

    @server.add_function(context=True)
    def odd(ctx):
        ctx.reply_headers["x-odd"] = object()
        return "never sent"

    server.serve()
    with pytest.raises(RemoteException, match="reply headers cannot be sent"):
        make_client().call(timeout=10).odd()


def test_full_outbox_raises_when_told_not_to_wait(make_client):
    client = make_client(outbox_limit=3, outbox_block=False)
    client.stop_publisher()  # nothing can be confirmed: the outbox fills up
    for _ in range(3):
        client.defer.anything()
    with pytest.raises(OutboxFull):
        client.defer.anything()
    assert len(client._pending) == 3  # the refused call left nothing behind
