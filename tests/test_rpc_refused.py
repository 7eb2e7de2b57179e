"""Messages the broker can never take, and requests that come back dead-lettered: a call fails alone, with an
error that tells the truth, and the client keeps working."""

from __future__ import annotations

import time

import gevent
import pytest

from amphora import AmqpRpcClient, NoResult, RequestExpired, RequestMayHaveRun
from amphora.amqp import Properties, connect, frames
from amphora.amqp.errors import ConnectionClosed
from amphora.protocol import HEADER_CLIENT, HEADER_DEADLINE
from helpers import executions, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://), except those with
    servers in other processes."""
    return any_broker_url


BIG = {"big": "h" * 1_000_000}


@pytest.fixture
def echo_client(make_server, make_client):
    server = make_server()
    server.add_function(lambda text: text, name="echo")
    server.serve()
    return make_client()


def test_a_header_that_cannot_fit_a_frame_fails_its_call_at_once(echo_client):
    client = echo_client
    started = time.monotonic()
    with pytest.raises(ValueError, match="frame_max"):
        client.call(timeout=10, headers=BIG).echo("hi")
    with pytest.raises(ValueError, match="frame_max"):
        client.defer(timeout=10, headers=BIG).echo("hi")
    with pytest.raises(ValueError, match="frame_max"):
        client.cast(headers=BIG).echo("hi")
    with pytest.raises(ValueError, match="routing key"):
        client.call(timeout=10, routing_key="k" * 256).echo("hi")
    assert time.monotonic() - started < 1
    assert len(client.transport.outbox) == 0 and len(client._pending) == 0
    assert client.call(timeout=10).echo("after") == "after"


def test_a_header_too_large_for_the_configured_frame_size_fails_before_connecting(amqp_url, service):
    client = AmqpRpcClient(service, url=f"{amqp_url}?frame_max=8192", autostart=False)  # judged by the URL's
    with pytest.raises(ValueError, match="frame_max 8192"):
        client.defer(headers={"big": "h" * 8192}).echo("hi")
    assert len(client.transport.outbox) == 0 and len(client._pending) == 0


def test_a_message_the_broker_closes_the_connection_on_leaves_the_outbox(echo_client, monkeypatch):
    client = echo_client
    monkeypatch.setattr(frames, "check_content_header", lambda size, frame_max: None)  # as if it fit
    refused = client.defer(timeout=30, headers=BIG).echo("refused")
    others = [client.defer(timeout=30).echo(n) for n in range(20)]
    with pytest.raises(ConnectionClosed) as info:
        refused.get(timeout=20)
    assert info.value.code == 501  # FRAME_ERROR
    assert [result.get(timeout=20) for result in others] == list(range(20))
    assert client.call(timeout=10).echo("after") == "after"
    assert client.transport.outbox.flush(timeout=5)


def test_a_reply_whose_headers_cannot_fit_a_frame_is_dropped_and_the_server_serves_on(make_server, make_client):
    server = make_server()

    @server.add_function(context=True)
    def big_reply(ctx):
        ctx.reply_headers["big"] = "h" * 200_000

    server.add_function(lambda text: text, name="echo")
    server.serve()
    client = make_client()
    with pytest.raises(NoResult):
        client.call(timeout=1).big_reply()
    assert client.call(timeout=10).echo("after") == "after"


@pytest.mark.rabbitmq_only("its server runs in another process")
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_request_that_expired_after_its_server_died_in_the_handler_may_have_run(
    amqp_url, start_server, make_client, execution_log, queue_type
):
    server = start_server(amqp_url, "--queue-type", queue_type)
    client = make_client(queue_type=queue_type)
    result = client.defer(timeout=3).slow(60, "once")
    wait_until(lambda: executions(execution_log))
    server.kill()  # mid-handler: the broker puts the request back, where it expires, no other server running
    with pytest.raises(NoResult) as info:
        result.get(timeout=10)
    assert isinstance(info.value, RequestMayHaveRun), repr(info.value)
    assert [e[1:] for e in executions(execution_log)] == [("slow", "once")]


@pytest.mark.rabbitmq_only("its server runs in another process")
def test_a_request_a_server_received_past_its_deadline_never_ran_and_says_so(
    amqp_url, start_server, make_client, execution_log, tmp_path
):
    start_server(amqp_url, "--concurrency", "2")
    client = make_client()
    release = tmp_path / "release"
    blocked = client.defer(timeout=30).block(str(release))
    wait_until(lambda: executions(execution_log))
    late = client.defer(timeout=2).add(1, 2)  # delivered to the blocked server, which reads it only when freed
    gevent.sleep(2.1)  # past its deadline: nothing to wait for but time
    release.touch()
    with pytest.raises(RequestExpired, match="never ran"):
        late.get(timeout=5)
    assert blocked.get(timeout=10) is None
    assert [e[1] for e in executions(execution_log)] == ["block"]


def test_a_redelivered_request_past_its_deadline_is_not_sent_back_as_never_run(
    make_server, make_client, amqp_url, service
):
    caller, other = make_client(), make_client()
    caller.stop_consumer()  # its reply queue keeps whatever comes back
    request = Properties(
        message_id="late",
        reply_to=caller.uuid,
        content_type="application/json",
        headers={HEADER_DEADLINE: int(time.time() * 1000) - 1000, HEADER_CLIENT: caller.uuid},
    )
    body = caller.serializer.dumps({"func": "record", "args": ["late"], "kwargs": {}})
    taker = connect(amqp_url)
    channel = taker.channel()
    channel.confirm_select()
    channel.basic_publish(body, f"rpc_{service}_request", "", request).wait()
    taken = []
    channel.basic_consume(f"rpc_{service}_request", taken.append)
    wait_until(lambda: taken)
    taker.close()  # as a server that died with it: the broker puts it back, marked redelivered
    server = make_server(concurrency=1)
    runs = []
    server.add_function(lambda tag: runs.append(tag), name="record")
    server.serve()
    other.call(timeout=10).record("after")  # served after the late one, which it dropped
    assert runs == ["after"]
    queues = connect(amqp_url).channel()
    assert queues.queue_declare(caller.reply_queue, passive=True).message_count == 0
    assert queues.queue_declare(f"rpc_{service}_request", passive=True).message_count == 0
