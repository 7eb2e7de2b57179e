"""FaultProxy: each fault checked with real amphora connections through it, against a private broker."""

from __future__ import annotations

import time

import gevent
import pytest

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import connect
from amphora.amqp.errors import BrokerUnreachable, ConnectionLost, ConnectionTimeout
from amphora.testing import RabbitNode
from amphora.testing.faultproxy import FaultProxy
from helpers import wait_until


@pytest.fixture
def proxy(rabbit_node: RabbitNode, amqp_url: str):
    with FaultProxy("127.0.0.1", rabbit_node.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def server(amqp_url: str, service: str):
    """A server connected to the broker directly (not through the proxy)."""
    rpc_server = AmqpRpcServer(service, url=amqp_url)
    rpc_server.add_function(lambda x: x * 2, name="double")
    rpc_server.add_function(lambda seconds, x: gevent.sleep(seconds) or x, name="slow")
    rpc_server.serve()
    yield rpc_server
    rpc_server.stop()


@pytest.fixture
def proxied_client(proxy: FaultProxy, amqp_url: str, service: str):
    """Make clients whose connections go through the proxy (heartbeat 1 s)."""
    clients: list[AmqpRpcClient] = []

    def make(**options) -> AmqpRpcClient:
        client = AmqpRpcClient(service, url=proxy.url_for(amqp_url), heartbeat=1, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()


def generations(client: AmqpRpcClient) -> tuple[int, int]:
    """How many times each of the client's two links has connected."""
    return client.transport.consumer.generation, client.transport.publisher.generation


class LossWatch:
    """Notes when a connection reports its loss."""

    def __init__(self, connection) -> None:
        self.times: list[float] = []
        connection.add_close_callback(lambda error: self.times.append(time.monotonic()))

    def seconds_after(self, start: float) -> float:
        """Wait for the loss; the seconds from ``start`` to it."""
        wait_until(lambda: self.times, timeout=10, interval=0.01)
        return self.times[0] - start


def test_url_for_keeps_everything_but_the_address():
    with FaultProxy("127.0.0.1", 5672) as proxy:
        assert proxy.host == "127.0.0.1" and proxy.port > 0
        url = "amqp://user:p%40ss@broker.example:5673/my%2Fvhost?heartbeat=5"
        assert proxy.url_for(url) == f"amqp://user:p%40ss@127.0.0.1:{proxy.port}/my%2Fvhost?heartbeat=5"
        assert proxy.url_for("amqp://broker:5672/") == f"amqp://127.0.0.1:{proxy.port}/"


def test_calls_go_through_the_proxy(proxy, server, proxied_client):
    client = proxied_client()
    assert client.call.double(21) == 42
    assert proxy.accepted == 2 and proxy.connections == 2  # the client's consuming and publishing links
    assert "forwarding" in repr(proxy)


def test_cut_resets_every_connection_and_the_client_reconnects(proxy, server, proxied_client):
    client = proxied_client()
    assert client.call.double(1) == 2
    loss = LossWatch(client.transport.consumer.connection)
    before = generations(client)
    results = [client.defer.slow(0.002, i) for i in range(500)]
    wait_until(lambda: sum(r.ready() for r in results) >= 50, timeout=30)
    start = time.monotonic()
    proxy.cut()
    assert loss.seconds_after(start) < 0.5  # a reset: noticed at once, no heartbeat needed
    results += [client.defer.slow(0, i) for i in range(500, 600)]  # made while the client reconnects
    assert [r.get(timeout=30) for r in results] == list(range(600))
    assert all(now > then for now, then in zip(generations(client), before, strict=True))
    assert proxy.accepted >= 4 and proxy.connections == 2  # new connections were accepted


def test_stall_is_detected_by_heartbeats_within_two_intervals(proxy, amqp_url):
    connection = connect(proxy.url_for(amqp_url), heartbeat=1)
    gevent.sleep(2.5)  # idle but heartbeats flow: more than two intervals without a false alarm
    assert connection.is_open
    loss = LossWatch(connection)
    start = time.monotonic()
    proxy.stall()
    assert proxy.stalled
    seconds = loss.seconds_after(start)
    assert 1.0 <= seconds <= 3.0, seconds  # two heartbeat intervals, give or take a tick
    assert proxy.connections == 1  # the proxy keeps its side open: it is a blackhole, not a reset
    with pytest.raises(ConnectionTimeout):  # new connections are accepted but never answered
        connect(proxy.url_for(amqp_url), connection_timeout=1)
    proxy.resume()
    connect(proxy.url_for(amqp_url)).close()


def test_stall_with_a_duration_resumes_by_itself(proxy, amqp_url):
    connection = connect(proxy.url_for(amqp_url), heartbeat=10)
    proxy.stall(0.5)
    start = time.monotonic()
    connection.channel().close()  # waits for the broker's answers, which come after the stall
    assert 0.3 <= time.monotonic() - start < 3.0
    assert not proxy.stalled and connection.is_open  # shorter than the heartbeat: nobody noticed
    connection.close()


def test_calls_survive_a_stall_longer_than_the_heartbeat(proxy, server, proxied_client):
    client = proxied_client()
    assert client.call.double(1) == 2
    before = generations(client)
    proxy.stall(4)  # calls made now wait in the outbox; the client reconnects once the stall ends
    results = [client.defer.double(i) for i in range(100)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(100)]
    assert all(now > then for now, then in zip(generations(client), before, strict=True))


def test_delay_adds_latency_in_each_direction(proxy, server, proxied_client, amqp_url):
    connection = connect(proxy.url_for(amqp_url))
    proxy.delay(0.2)
    assert proxy.latency == 0.2
    start = time.monotonic()
    connection.channel().close()  # two round trips (open, close): at least 4 x 0.2 s
    assert time.monotonic() - start >= 0.8
    proxy.delay(0)
    start = time.monotonic()
    connection.channel().close()
    assert time.monotonic() - start < 0.2
    connection.close()
    client = proxied_client()
    assert client.call.double(1) == 2
    proxy.delay(0.1)
    start = time.monotonic()
    results = [client.defer.double(i) for i in range(200)]  # latency, not a throughput limit
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(200)]
    assert 0.2 <= time.monotonic() - start < 2.0
    with pytest.raises(ValueError):
        proxy.delay(-1)


def test_refuse_refuses_new_connections_only(proxy, server, proxied_client, amqp_url):
    client = proxied_client()
    assert client.call.double(1) == 2
    proxy.refuse()
    assert proxy.refusing
    with pytest.raises(BrokerUnreachable, match="refused"):
        connect(proxy.url_for(amqp_url))
    assert client.call.double(2) == 4  # open connections go on
    proxy.cut()  # a full outage: the client cannot come back until accept()
    results = [client.defer.double(i) for i in range(100)]
    gevent.sleep(1.5)
    assert not any(r.ready() for r in results)
    assert proxy.connections == 0
    proxy.accept()
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(100)]
    assert proxy.connections == 2


def test_close_ends_everything(proxy, amqp_url):
    connection = connect(proxy.url_for(amqp_url), heartbeat=0)
    port = proxy.port
    loss = LossWatch(connection)
    start = time.monotonic()
    proxy.close()
    assert loss.seconds_after(start) < 0.5
    with pytest.raises(ConnectionLost):
        connection.channel()
    with pytest.raises(BrokerUnreachable):
        connect(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    with pytest.raises(RuntimeError, match="closed"):
        proxy.accept()
