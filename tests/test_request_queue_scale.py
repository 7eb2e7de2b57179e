"""Per-key queue operations by the thousand on a real broker: they share a bounded set of channels, wait
their turn, and the process stays responsive throughout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent.event import Event

from amphora import AmqpRpcClient, transport
from amphora.amqp import Channel, Connection
from amphora.link import OPERATION_CHANNELS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


USERS = 10_000
MAX_GAP = 3.0
"""Seconds the 0.1 s timer may wait at most: the process shares 2 loaded cores (1.3 s seen at load 6)."""


class Ticker:
    """A 0.1 s timer: the longest gap between its ticks shows how long the event loop was held up."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = time.monotonic()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            gevent.sleep(0.1)
            self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last)
        self._last = now

    def stop(self) -> float:
        """The longest gap, counting the one running now."""
        self._tick()
        self._greenlet.kill()
        return self.longest


def outcome(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What ``function`` returns, or the exception it raises."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        return exc


def test_ten_thousand_concurrent_queue_operations_neither_hang_nor_fail(make_server, make_client):
    client = make_client()
    server = make_server(consume_default_queue=False)
    server.add_function(lambda user: user, "whoami")
    server.serve()
    users = [f"user{i}" for i in range(USERS)]
    ticker = Ticker()

    creating = [client.create_new_request_queue(user, nowait=True) for user in users]
    gevent.joinall(creating, raise_error=True)
    assert all(g.successful() for g in creating)
    # and the link's own, and the server's publishing link's, which shares the connection
    assert len(client.transport.publisher.connection._channels) <= OPERATION_CHANNELS + 2

    # the server did not create these queues: each receive asks the broker whether its queue exists
    receiving = [gevent.spawn(server.receive_from_queue, user, block=False) for user in users]
    missing = [gevent.spawn(outcome, server.receive_from_queue, f"nobody{i}", block=False) for i in range(100)]
    gevent.joinall(receiving + missing)
    receivers = [g.get() for g in receiving]
    assert all(isinstance(g.value, ValueError) for g in missing)  # a channel error closed its channel only
    assert len(server.transport.consumer.connection._channels) <= OPERATION_CHANNELS + 2

    for user in users[:: USERS // 20]:
        assert client.call(routing_key=user, timeout=30).whoami(user) == user
    for receiver in receivers:
        receiver.stop()
    assert all(receiver.wait(timeout=30) for receiver in receivers)

    removing = [client.remove_request_queue(user, nowait=True) for user in users]
    gevent.joinall(removing, raise_error=True)
    assert ticker.stop() < MAX_GAP


def test_operations_wait_for_a_channel_when_the_broker_allows_few(amqp_url, service):
    client = AmqpRpcClient(service, url=f"{amqp_url}?channel_max=4")  # the link's own channel and 3 more
    try:
        ticker = Ticker()
        creating = [client.create_new_request_queue(f"user{i}", nowait=True) for i in range(300)]
        gevent.joinall(creating, raise_error=True)
        assert all(g.successful() for g in creating)
        assert ticker.stop() < MAX_GAP
        connection = client.transport.publisher.connection
        assert connection is not None and connection.channel_max == 4
        removing = [client.remove_request_queue(f"user{i}", nowait=True) for i in range(300)]
        gevent.joinall(removing, raise_error=True)
    finally:
        client.stop()


def test_an_operation_waiting_for_its_turn_honours_its_timeout(make_client):
    client = make_client()
    link = client.transport.publisher
    release = Event()
    holding = [gevent.spawn(link.execute, lambda channel: release.wait()) for _ in range(OPERATION_CHANNELS)]
    gevent.sleep(0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        link.execute(lambda channel: None, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    release.set()
    gevent.joinall(holding, raise_error=True)
    assert link.execute(lambda channel: channel.is_open, timeout=5)


class Declares:
    """Counts the channels opened and the queues declared (passively or not) while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.channels = self.queues = 0
        open_channel, declare = Connection.channel, Channel.queue_declare

        def counted_channel(connection: Connection) -> Channel:
            self.channels += 1
            return open_channel(connection)

        def counted_declare(channel: Channel, *args: Any, **kwargs: Any) -> Any:
            self.queues += 1
            return declare(channel, *args, **kwargs)

        monkeypatch.setattr(Connection, "channel", counted_channel)
        monkeypatch.setattr(Channel, "queue_declare", counted_declare)


@pytest.mark.rabbitmq_only("counts by patching the network Connection and Channel")
def test_a_receive_from_a_queue_created_here_asks_the_broker_nothing_more(make_server, make_client, monkeypatch):
    client = make_client()
    server = make_server(consume_default_queue=False)
    server.add_function(lambda user: user, "whoami")
    server.serve()
    server.create_new_request_queue("alice", expires=60)
    client.create_new_request_queue("bob")
    counted = Declares(monkeypatch)
    receiver = server.receive_from_queue("alice", block=False)
    assert (counted.channels, counted.queues) == (0, 0)
    assert client.call(routing_key="alice", timeout=10).whoami("alice") == "alice"
    receiver.stop()
    server.receive_from_queue("bob", block=False).stop()  # made elsewhere: the server asks whether it exists
    assert counted.queues == 1
    with pytest.raises(ValueError, match="nobody"):
        server.receive_from_queue("nobody", block=False)
    # half of its expiry later, the server no longer takes alice's queue for granted
    later = transport.monotonic() + 31
    monkeypatch.setattr(transport, "monotonic", lambda: later)
    server.receive_from_queue("alice", block=False).stop()
    assert counted.queues == 3


def test_a_queue_created_here_and_removed_elsewhere_is_a_value_error(make_server, make_client):
    client = make_client()
    server = make_server(consume_default_queue=False)
    server.add_function(lambda user: user, "whoami")
    server.serve()
    server.create_new_request_queue("alice")
    client.remove_request_queue("alice")
    with pytest.raises(ValueError, match="alice"):
        server.receive_from_queue("alice", block=False)
    server.create_new_request_queue("alice")  # the server serves on, once its link reconnected
    receiver = server.receive_from_queue("alice", block=False)
    assert client.call(routing_key="alice", timeout=20).whoami("alice") == "alice"
    receiver.stop()
    assert receiver.wait(timeout=10)


def test_an_operation_keeps_waiting_for_a_channel_past_a_thousand_retries(make_client, monkeypatch):
    """The backoff of an operation that finds no free channel stays bounded however long it waits."""
    from amphora import link as link_module
    from amphora.amqp.errors import ChannelLimitReached

    client = make_client()
    publisher = client.transport.publisher
    monkeypatch.setattr(link_module, "CHANNEL_WAIT", 0.0)
    refusals = iter(range(1100))
    operate = publisher._operate

    def no_channel_for_a_while(operation: Callable[[Channel], Any]) -> Any:
        if next(refusals, None) is not None:
            raise ChannelLimitReached("all channels in use")
        return operate(operation)

    monkeypatch.setattr(publisher, "_operate", no_channel_for_a_while)
    assert publisher.execute(lambda channel: "done", timeout=60) == "done"
