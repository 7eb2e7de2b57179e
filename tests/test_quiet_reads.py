"""Quiet reads (amphora.amqp.quiet): held confirms are read late but surely, and whoever waits is not held."""

from __future__ import annotations

import socket
import time

import gevent
import pytest

from amphora.amqp import connect, quiet
from amphora.amqp.errors import ConnectionLost
from amphora.amqp.quiet import HELD_LOW_WATER, QuietReads, kernel_supports_quiet_reads
from amphora.testing.faultproxy import FaultProxy

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not kernel_supports_quiet_reads(), reason="needs Linux 5.0 or later"),
]


def low_water(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


@pytest.fixture
def publisher(connection):
    """A confirming channel and a queue to publish to."""
    channel = connection.channel()
    channel.confirm_select()
    return channel, channel.queue_declare("", exclusive=True).queue


# --- the mechanism ------------------------------------------------------------------------------


def test_a_held_confirm_waits_for_the_release(connection, publisher):
    channel, queue = publisher
    connection.reads.max_delay = 30
    connection.reads.hold()
    confirmation = channel.basic_publish(b"held", "", queue)
    with pytest.raises(TimeoutError):
        confirmation.wait(0.5)  # the confirm is in the socket; the reader was not woken for it
    connection.reads.release()
    confirmation.wait(5)


def test_a_hold_ends_by_itself_after_max_delay(connection, publisher):
    channel, queue = publisher
    connection.reads.max_delay = 0.3
    connection.reads.hold()
    held_at = time.monotonic()
    channel.basic_publish(b"held", "", queue).wait(5)
    assert time.monotonic() - held_at >= 0.25
    assert not connection.reads.held


def test_a_synchronous_method_is_answered_while_confirms_are_held(connection, publisher):
    channel, queue = publisher
    connection.reads.max_delay = 30
    connection.reads.hold()
    confirmation = channel.basic_publish(b"held", "", queue)
    with gevent.Timeout(5):
        assert channel.queue_declare(queue, passive=True).queue == queue
        confirmation.wait()  # released for the answer, so read with it


def test_a_cut_connection_is_noticed_while_held(amqp_url, rabbit_node):
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        conn = connect(proxy.url_for(amqp_url))
        channel = conn.channel()
        channel.confirm_select()
        queue = channel.queue_declare("", exclusive=True).queue
        conn.reads.max_delay = 30
        conn.reads.hold()
        confirmation = channel.basic_publish(b"held", "", queue)
        proxy.cut()
        with pytest.raises(ConnectionLost):
            confirmation.wait(5)
        assert not conn.is_open


def test_holds_set_the_low_water_mark_and_give_way():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reads = QuietReads(ours, max_delay=30)
        with reads.awaiting_answer():
            reads.hold()
            assert not reads.held  # an answer is awaited
        reads.hold()
        assert reads.held and low_water(ours) == HELD_LOW_WATER
        reads.release()
        assert not reads.held and low_water(ours) == 1
        reads.hold()
        assert not reads.held  # the reader has not yet read what the release let through
        reads.read_since_release = True
        reads.hold()
        assert reads.held
        reads.close()
        assert not reads.held
        reads.read_since_release = True
        reads.hold()
        assert not reads.held  # closed for good


def test_one_who_waits_for_every_frame_keeps_the_others_from_holding():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reads = QuietReads(ours, max_delay=30)
        server, client = object(), object()
        reads.hold()
        reads.wait_for_every_frame(server)  # e.g. a server whose replies' confirms keep its prefetch open
        assert not reads.held and low_water(ours) == 1
        reads.read_since_release = True
        reads.hold()  # another publisher on the same connection
        assert not reads.held
        reads.may_wait(client)  # says nothing for the server
        reads.hold()
        assert not reads.held
        reads.may_wait(server)
        reads.hold()
        assert reads.held


def test_without_a_socket_nothing_is_held():
    reads = QuietReads()
    reads.hold()
    assert not reads.held


# --- RPC ----------------------------------------------------------------------------------------


@pytest.fixture
def slow_releases(monkeypatch):
    """Holds that last 30 s: a test that needs one to end by itself would time out."""
    monkeypatch.setattr(quiet, "MAX_DELAY", 30.0)


def serving_add(make_server, **options):
    server = make_server(**options)
    server.add_function(lambda a, b: a + b, name="add")
    server.serve()
    return server


def test_a_serial_server_answers_at_full_speed(slow_releases, make_server, make_client):
    # with a prefetch of 1, each request waits for the previous one's ack, sent once its reply is confirmed:
    # a held confirm would hold up every call
    serving_add(make_server, concurrency=1)
    client = make_client()
    with gevent.Timeout(10):
        assert [client.call.add(i, 1) for i in range(10)] == list(range(1, 11))


def test_casts_and_waited_publishes_are_confirmed_at_once_between_held_calls(slow_releases, make_server, make_client):
    serving_add(make_server)
    client = make_client()
    assert client.call.add(1, 2) == 3  # its confirm may be held
    with gevent.Timeout(10):
        assert client.cast.add(2, 2).get() is None
        assert client.defer(wait_publish=True).add(3, 3).get() == 6
        assert client.call.add(4, 4) == 8


def test_a_stopping_server_gets_its_held_reply_confirms_and_acks_every_request(
    slow_releases, make_server, make_client, amqp_url, service
):
    server = serving_add(make_server)
    client = make_client()
    assert [client.call.add(i, i) for i in range(5)] == [0, 2, 4, 6, 8]
    with gevent.Timeout(10):
        server.stop()
    with connect(amqp_url) as conn:
        assert conn.channel().queue_declare(f"rpc_{service}_request", passive=True).message_count == 0


def test_a_stopped_client_leaves_its_shared_connection_free_to_hold(make_client):
    stopping, staying = make_client(), make_client()
    connection = staying.transport.publisher.connection
    assert stopping.transport.publisher.connection is connection  # they share it
    stopping.transport.outbox._want_every_frame(connection)  # as while a cast of its awaits its confirm
    stopping.stop()
    connection.reads.read_since_release = True
    connection.reads.hold()  # for the confirms of the client that stays
    assert connection.reads.held
