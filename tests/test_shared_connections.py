"""Clients and servers of one process share a bounded number of connections to their broker (issue 26.4)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import gevent
import pytest

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import ConnectionParameters
from amphora.connections import LINKS_PER_CONNECTION, Role, SharedConnections
from amphora.testing import RabbitNode
from helpers import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


CLIENTS = 1000
CALLS = 20


@pytest.fixture(scope="module")
def small_node() -> Iterator[RabbitNode]:
    """A node with the file limit of a Debian node started by hand: 1024 files, 832 sockets."""
    with RabbitNode(file_limit=1024) as node:
        node.start()
        yield node


def broker_connections(node: RabbitNode) -> int:
    return len(node.ctl("list_connections", "-q", "name").strip().split("\n")) - 1  # one header line


def test_a_thousand_clients_in_one_process_fit_a_node_of_832_sockets(small_node, service):
    server = AmqpRpcServer(service, url=small_node.url, concurrency=200)
    server.add_function(lambda x: x + 1, "inc")
    server.serve()
    starting = [gevent.spawn(AmqpRpcClient, service, url=small_node.url) for _ in range(CLIENTS)]
    gevent.joinall(starting, raise_error=True)
    clients = [g.value for g in starting]
    try:
        # consuming and publishing apart, at most LINKS_PER_CONNECTION links a connection
        assert broker_connections(small_node) <= 2 * math.ceil((CLIENTS + 1) / LINKS_PER_CONNECTION)

        def twenty_calls(client: AmqpRpcClient, first: int) -> list[int]:
            return [client.call(timeout=60).inc(first + i) for i in range(CALLS)]

        calling = [gevent.spawn(twenty_calls, client, n * CALLS) for n, client in enumerate(clients)]
        gevent.joinall(calling, raise_error=True)
        assert [result for g in calling for result in g.value] == [x + 1 for x in range(CLIENTS * CALLS)]
    finally:
        gevent.joinall([gevent.spawn(client.stop) for client in clients])
        server.stop()
    wait_until(lambda: broker_connections(small_node) == 0, timeout=30)  # the last link on each closed it


def test_consuming_and_publishing_never_share_a_connection(make_client, make_server):
    first, second = make_client(), make_client()
    server = make_server()
    server.serve()
    consumers = {id(side.transport.consumer.connection) for side in (first, second, server)}
    publishers = {id(side.transport.publisher.connection) for side in (first, second, server)}
    assert len(consumers) == len(publishers) == 1 and consumers != publishers


def test_a_lost_shared_connection_reaches_every_link_on_it_and_all_come_back(make_client, make_server):
    server = make_server()
    server.add_function(lambda: "pong", "ping")
    server.serve()
    clients = [make_client() for _ in range(3)]
    links = [side.transport.consumer for side in (server, *clients)]
    generations = [link.generation for link in links]
    shared = links[0].connection
    assert shared is not None and all(link.connection is shared for link in links)
    shared.close()  # as if the broker dropped it
    wait_until(lambda: all(link.generation > before for link, before in zip(links, generations, strict=True)))
    assert all(client.call(timeout=30).ping() == "pong" for client in clients)
    assert all(link.connection is links[0].connection is not shared for link in links)


def test_a_connection_without_a_free_channel_sends_new_links_to_another(amqp_url, service):
    url = f"{amqp_url}?channel_max=3"
    server = AmqpRpcServer(service, url=url)
    server.add_function(lambda: "pong", "ping")
    server.serve()
    first = server.transport.consumer.connection
    assert first is not None
    taken = [first.channel() for _ in range(2)]  # with the channel its links share, all three are open
    clients = [AmqpRpcClient(service, url=url) for _ in range(3)]
    try:
        assert all(client.transport.consumer.connection is not first for client in clients)
        assert all(client.call(timeout=30).ping() == "pong" for client in clients)
    finally:
        for client in clients:
            client.stop()
        server.stop()
        for channel in taken:
            channel.close()


class _SlowToClose:
    """A connection whose close takes a while, as a real one waits for the broker's answer."""

    is_open = True

    def close(self, timeout: float) -> None:
        gevent.sleep(0.01)
        self.is_open = False


def test_a_connection_its_last_link_is_closing_goes_to_no_new_link():
    connections = SharedConnections(open=lambda parameters: _SlowToClose())  # type: ignore[arg-type,return-value]
    parameters = ConnectionParameters.from_url("amqp://localhost/")
    first = connections.lease(parameters, Role.PUBLISH)
    closing = gevent.spawn(connections.release, first)
    gevent.sleep(0)  # the last link gave it back: it is closing
    second = connections.lease(parameters, Role.PUBLISH)
    assert second is not first
    closing.join()
