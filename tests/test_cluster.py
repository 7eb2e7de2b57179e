"""A three-node RabbitMQ cluster (amphora.testing.RabbitCluster) with quorum queues: a node dies under load."""

from __future__ import annotations

import collections
import json
import time

import gevent
import pytest

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.testing import RabbitCluster
from amphora.testing.faultproxy import FaultProxy
from helpers import wait_until

CALLS = 1000


class Service:
    """Two in-process servers of ``service`` on the cluster, counting the executions of ``work``."""

    def __init__(self, service: str, urls: list[str]) -> None:
        self.executions: collections.Counter[int] = collections.Counter()
        self.servers = []
        for shift in (0, 1):  # the second server starts at the second node
            server = AmqpRpcServer(service, urls=urls[shift:] + urls[:shift], queue_type="quorum", heartbeat=2)
            server.add_function(self.work)
            server.serve()
            self.servers.append(server)

    def work(self, n: int) -> list[int]:
        self.executions[n] += 1
        gevent.sleep(0.005)  # so that calls are in flight when the node dies
        return [n, n * n]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def node_of(cluster: RabbitCluster, client: AmqpRpcClient) -> int:
    """The index of the node the client's consuming link is connected to."""
    connection = client.transport.consumer.connection
    assert connection is not None
    return cluster.index_of_port(connection.parameters.port)


def queue_members(cluster: RabbitCluster, index: int) -> dict[str, tuple[str, int]]:
    """name -> (type, number of members) of every queue, as node ``index`` reports them."""
    output = cluster.nodes[index].ctl("list_queues", "name", "type", "members", "--formatter", "json")
    return {q["name"]: (q["type"], len(q.get("members") or [])) for q in json.loads(output)}


def where_calls_wait(client: AmqpRpcClient, backend: Service) -> str:
    """Where unanswered calls may be stuck, for a failure message: unconfirmed requests in the client's
    outbox, requests running (or awaiting their reply's confirm) and unconfirmed replies in the servers'."""
    servers = [(len(server._running), len(server.transport.outbox)) for server in backend.servers]
    return (
        f"{len(client._pending)} calls unanswered; client outbox: {len(client.transport.outbox)};"
        f" servers (requests unacknowledged, outbox): {servers}"
    )


@pytest.mark.timeout(240)
def test_killing_the_clients_node_under_load_loses_no_call(rabbit_cluster, service):
    cluster = rabbit_cluster
    assert sorted(cluster.running_nodes()) == sorted(node.nodename for node in cluster.nodes)
    backend = Service(service, cluster.urls)
    client = AmqpRpcClient(service, urls=cluster.urls, queue_type="quorum", heartbeat=2, timeout=120)
    try:
        assert client.call.work(-1) == [-1, 1]
        queues = queue_members(cluster, 1)
        assert queues[f"rpc_{service}_request"] == ("quorum", 3)  # replicated on every node
        assert queues[client.reply_queue] == ("quorum", 3)
        victim = node_of(cluster, client)
        results = [client.defer.work(n) for n in range(CALLS)]
        wait_until(lambda: sum(r.ready() for r in results) >= CALLS // 5, timeout=60)
        answered_before = sum(r.ready() for r in results)
        start = time.monotonic()
        cluster.kill(victim)
        gevent.wait(results, timeout=120)
        assert all(r.ready() for r in results), where_calls_wait(client, backend)  # none lost
        assert [r.get() for r in results] == [[n, n * n] for n in range(CALLS)]  # none wrong
        seconds = time.monotonic() - start
        assert node_of(cluster, client) != victim  # the client went on through another node
        assert set(backend.executions) == {-1, *range(CALLS)}  # at least once each; a copy may run twice
        print(
            f"\n{answered_before} of {CALLS} calls answered when node {victim} was killed; the rest within"
            f" {seconds:.1f} s; {sum(c > 1 for c in backend.executions.values())} ran twice"
        )
        cluster.start(victim)  # it rejoins the cluster with its data
        wait_until(lambda: len(cluster.running_nodes()) == 3, timeout=60, interval=0.5)
        assert client.call.work(CALLS) == [CALLS, CALLS * CALLS]
    finally:
        client.stop()
        backend.stop()


@pytest.mark.timeout(240)
def test_a_blackholed_node_is_left_for_another_after_heartbeats_and_a_connection_timeout(rabbit_cluster, service):
    """The network to the client's node stalls: heartbeats notice, the client reconnects elsewhere.

    The link tries its first URL again first, which costs one ``connection_timeout`` while it is stalled.
    """
    cluster = rabbit_cluster
    backend = Service(service, cluster.urls)
    proxies = [FaultProxy("127.0.0.1", node.port) for node in cluster.nodes]
    urls = [proxy.url_for(url) for proxy, url in zip(proxies, cluster.urls, strict=True)]
    client = AmqpRpcClient(service, urls=urls, queue_type="quorum", heartbeat=1, connection_timeout=2, timeout=120)
    try:
        assert client.call.work(-1) == [-1, 1]
        port = client.transport.consumer.connection.parameters.port
        stalled = next(i for i, proxy in enumerate(proxies) if proxy.port == port)
        results = [client.defer.work(n) for n in range(CALLS)]
        wait_until(lambda: sum(r.ready() for r in results) >= CALLS // 5, timeout=60)
        start = time.monotonic()
        proxies[stalled].stall()
        assert [r.get(timeout=120) for r in results] == [[n, n * n] for n in range(CALLS)]
        seconds = time.monotonic() - start
        assert client.transport.consumer.connection.parameters.port != port  # it left the blackholed node
        assert seconds < 2 * 1 + 2 + 2 + 10  # two heartbeat intervals + a connection timeout + backoff + slack
        print(f"\ncalls went on through another node {seconds:.1f} s after the stall")
    finally:
        client.stop()
        backend.stop()
        for proxy in proxies:
            proxy.close()


@pytest.mark.timeout(240)
def test_a_client_that_reconnects_during_a_leader_election_is_not_nacked_forever(rabbit_cluster, service):
    """RabbitMQ 3.10 nacks every publish to a quorum queue on a channel that first published to it during
    the queue's leader election: the outbox must publish nacked messages again on a new connection. The
    client declares the queues (their leaders are on its node), the servers are on the two other nodes, the
    client's node dies and it reconnects to another."""
    cluster = rabbit_cluster
    client = AmqpRpcClient(service, urls=cluster.urls, queue_type="quorum", heartbeat=2, timeout=60)
    backend = Service(service, cluster.urls[1:] + cluster.urls[:1])
    try:
        assert client.call.work(-1) == [-1, 1]
        assert node_of(cluster, client) == 0
        cluster.kill(0)
        results = []
        for n in range(100):
            results.append(client.defer.work(n))
            gevent.sleep(0.01)
        gevent.wait(results, timeout=20)
        assert sum(r.ready() for r in results) == 100, "the client's requests are nacked again and again"
        assert [r.get() for r in results] == [[n, n * n] for n in range(100)]
    finally:
        client.stop()
        backend.stop()
