"""Connections against real brokers: handshake errors, loss, heartbeats, flow control."""

from __future__ import annotations

import socket
import time
import uuid

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Queue

from amphora.amqp import connect
from amphora.amqp.errors import (
    AuthenticationError,
    BrokerUnreachable,
    ConnectionLost,
    ConnectionTimeout,
    TLSError,
    VhostNotAllowed,
)

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wrong_password_is_an_authentication_error(amqp_url):
    url = amqp_url.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(AuthenticationError, match="ACCESS_REFUSED") as info:
        connect(url, connection_timeout=5)
    assert "wrong" not in str(info.value)  # the password is never shown


def test_unknown_vhost_says_so(amqp_url):
    with pytest.raises(VhostNotAllowed, match="no-such-vhost"):
        connect(amqp_url.rsplit("/", 1)[0] + "/no-such-vhost", connection_timeout=5)


def test_nothing_listening_is_unreachable_at_once():
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="refused"):
        connect(f"amqp://guest:guest@127.0.0.1:{free_port()}/", connection_timeout=5)
    assert time.monotonic() - started < 1


def test_silent_listener_times_out_within_the_connection_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionTimeout):
            connect(f"amqp://guest:guest@127.0.0.1:{port}/", connection_timeout=1)
        assert 0.9 < time.monotonic() - started < 3


def test_tls_to_a_plain_listener_is_a_tls_error(amqp_url):
    url = amqp_url.replace("amqp://", "amqps://")
    with pytest.raises(TLSError, match="TLS handshake"):
        connect(url, connection_timeout=5)


def test_broker_kill_fails_every_waiter_at_once(private_rabbit_node):
    conn = connect(private_rabbit_node.url)
    closed = Event()
    conn.add_close_callback(lambda error: closed.set() if isinstance(error, ConnectionLost) else None)
    publisher = conn.channel()
    publisher.queue_declare("kill-test")
    publisher.confirm_select()
    declarer = conn.channel()
    private_rabbit_node.pause()  # hold every answer back so that waiters pile up
    confirmations = [publisher.basic_publish(b"x", "", "kill-test") for _ in range(100)]
    waiters = [gevent.spawn(c.wait) for c in confirmations]
    declaring = gevent.spawn(declarer.queue_declare, "never")
    gevent.sleep(0.2)  # let the waiters block (nothing can answer them: the broker is stopped)
    assert not any(w.ready() for w in [*waiters, declaring])
    killed_at = time.monotonic()
    private_rabbit_node.kill()
    gevent.joinall([*waiters, declaring], timeout=5)
    assert time.monotonic() - killed_at < 2
    assert all(isinstance(w.exception, ConnectionLost) for w in [*waiters, declaring])
    assert closed.is_set() and not conn.is_open
    with pytest.raises(ConnectionLost):
        publisher.basic_publish(b"x", "", "kill-test")


def test_frozen_broker_is_detected_by_heartbeats(private_rabbit_node):
    conn = connect(private_rabbit_node.url, heartbeat=1)
    lost: Queue = Queue()
    conn.add_close_callback(lost.put)
    private_rabbit_node.pause()
    started = time.monotonic()
    try:
        error = lost.get(timeout=10)
    finally:
        private_rabbit_node.resume()
    elapsed = time.monotonic() - started
    assert isinstance(error, ConnectionLost) and "heartbeat" in str(error)
    assert 1.5 <= elapsed <= 3.5, elapsed  # about two heartbeat intervals


def test_idle_connection_stays_up_on_heartbeats(amqp_url):
    conn = connect(amqp_url, heartbeat=1)
    gevent.sleep(4)  # the point of the test: idle for four heartbeat intervals
    assert conn.is_open
    conn.channel().queue_declare("", exclusive=True)
    conn.close()


def test_blocked_and_unblocked_are_reported(private_rabbit_node):
    conn = connect(private_rabbit_node.url)
    events: Queue = Queue()
    conn.add_blocked_callback(lambda reason: events.put(("blocked", reason)))
    conn.add_unblocked_callback(lambda: events.put(("unblocked", None)))
    channel = conn.channel()
    channel.queue_declare("blocked-test")
    channel.confirm_select()
    private_rabbit_node.set_memory_watermark(0)
    confirmation = channel.basic_publish(b"x", "", "blocked-test")
    kind, reason = events.get(timeout=20)
    assert kind == "blocked" and "memory" in reason.lower() and conn.blocked
    assert not confirmation.done
    private_rabbit_node.set_memory_watermark(0.4)
    assert events.get(timeout=20) == ("unblocked", None) and not conn.blocked
    confirmation.wait(timeout=10)
    conn.close()


def test_clean_close_reports_no_error(amqp_url):
    conn = connect(amqp_url)
    reported = []
    conn.add_close_callback(reported.append)
    channel = conn.channel()
    conn.close()
    assert reported == [None] and not conn.is_open and not channel.is_open


def test_unique_names_per_connection_do_not_collide(amqp_url):
    first, second = connect(amqp_url), connect(amqp_url)
    names = {first.channel().queue_declare("", exclusive=True).queue for _ in range(2)}
    names.add(second.channel().queue_declare(f"q-{uuid.uuid4().hex}", exclusive=True).queue)
    assert len(names) == 3
    first.close()
    second.close()
