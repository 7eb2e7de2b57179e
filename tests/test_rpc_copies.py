"""Copies of one request: those a stalled server lost to another, and those a caller sends again."""

from __future__ import annotations

import collections
import json
import uuid

import gevent
import pytest
from gevent.event import Event

from amphora import IgnoreRequest
from amphora.amqp import Properties, connect
from helpers import executions, wait_until

STALL = 5.0
"""Seconds the stalling server blocks: past a heartbeat of 1 s, the broker closes its connection."""


@pytest.mark.timeout(120)
def test_a_stalled_server_does_not_start_the_requests_it_lost(
    amqp_url, service, start_server, execution_log, make_client
):
    stalling = start_server(f"{amqp_url}?heartbeat=1", "--concurrency", "10")
    client = make_client(timeout=60)
    # it takes the block and the next 9 adds; blocked, it misses heartbeats: the broker gives them to the next
    results = [client.defer.stall(STALL, "stall")] + [client.defer.add(i, 0) for i in range(20)]
    wait_until(lambda: executions(execution_log))
    other = start_server(amqp_url)
    assert [r.get(timeout=60) for r in results] == ["stall", *range(20)]
    for server in (stalling, other):  # each stops once it has run, or dropped, every request it holds
        assert server.terminate() == 0
    runs = executions(execution_log)
    assert [pid for pid, function, _ in runs if function == "stall"][0] == stalling.pid
    assert len([1 for _, function, _ in runs if function == "stall"]) == 2  # redelivered: the broker took them
    counts = collections.Counter(argument for _, function, argument in runs if function == "add")
    assert counts == {str(i): 1 for i in range(20)}  # none of the requests it lost ran again


@pytest.mark.parametrize("when", ["running", "replied", "confirmed"])
@pytest.mark.timeout(60)
def test_every_copy_of_a_request_gets_its_own_reply(make_server, amqp_url, service, spy, when):
    """A copy from another caller, arriving while the request runs, after its reply was published but before
    the broker confirmed it, or after that: each caller gets one reply; the function runs once."""
    server = make_server()
    runs: list[str] = []
    started, release, confirmed = Event(), Event(), Event()

    def work(tag: str) -> str:
        runs.append(tag)
        started.set()
        release.wait()
        return tag

    server.add_function(work)
    if when != "running":
        release.set()
    if when == "replied":  # the server learns of the confirms of its replies only once `confirmed` is set
        publish = server.transport.outbox.publish

        def publish_holding_confirms(*args, on_done, **options):
            return publish(*args, on_done=lambda error: gevent.spawn(late, on_done, error), **options)

        def late(on_done, error):
            confirmed.wait()
            on_done(error)

        server.transport.outbox.publish = publish_holding_confirms
    else:
        confirmed.set()
    server.serve()
    replies = {caller: spy(f"rpc_{service}_response", caller) for caller in ("first", "second")}
    received: dict[str, list[str]] = {caller: [] for caller in replies}
    channel = connect(amqp_url).channel()
    channel.confirm_select()
    request_id = uuid.uuid4().hex

    def send(caller: str, message_id: str = request_id) -> None:
        body = json.dumps({"func": "work", "args": [message_id], "kwargs": {}}).encode()
        properties = Properties(message_id=message_id, reply_to=caller, content_type="application/json")
        channel.basic_publish(body, f"rpc_{service}_request", "", properties).wait(timeout=10)

    def next_reply(caller: str) -> str:
        message = replies[caller].get(timeout=10)
        assert json.loads(message.body) == {"result": message.properties.correlation_id}
        received[caller].append(message.properties.correlation_id)
        return received[caller][-1]

    send("first")
    if when == "running":
        assert started.wait(timeout=10)
        send("second")
        wait_until(lambda: server._running.held(request_id) == 2)  # it joined the running one
        release.set()
    else:
        assert next_reply("first") == request_id
        if when == "confirmed":
            wait_until(lambda: not len(server.transport.outbox))
        send("second")
    assert next_reply("second") == request_id
    confirmed.set()
    for caller in replies:  # the reply to a later request comes after any other reply to that caller
        send(caller, fence := uuid.uuid4().hex)
        while next_reply(caller) != fence:
            pass
        assert received[caller] == [request_id, fence]
    assert runs.count(request_id) == 1


@pytest.mark.timeout(60)
def test_a_copy_that_joined_an_ignored_request_is_handed_back_with_it(make_server, amqp_url, service, spy):
    server = make_server()
    started, release = Event(), Event()
    runs: list[str] = []

    def work(tag: str) -> str:
        runs.append(tag)
        if len(runs) == 1:  # the first time: ignored, for another server (here, this one again)
            started.set()
            release.wait()
            raise IgnoreRequest()
        return tag

    server.add_function(work)
    server.serve()
    replies = {caller: spy(f"rpc_{service}_response", caller) for caller in ("first", "second")}
    channel = connect(amqp_url).channel()
    channel.confirm_select()
    request_id = uuid.uuid4().hex
    for caller in ("first", "second"):
        body = json.dumps({"func": "work", "args": [request_id], "kwargs": {}}).encode()
        properties = Properties(message_id=request_id, reply_to=caller, content_type="application/json")
        channel.basic_publish(body, f"rpc_{service}_request", "", properties).wait(timeout=10)
        if caller == "first":
            assert started.wait(timeout=10)
    wait_until(lambda: server._running.held(request_id) == 2)  # the second copy joined the running one
    release.set()
    for caller, queue in replies.items():  # both copies went back to the queue, and came again
        assert queue.get(timeout=10).properties.correlation_id == request_id, caller
    assert runs == [request_id, request_id]
