"""The clients of one process share one reply queue (amphora.replies, issue 26.4)."""

from __future__ import annotations

import gc

import gevent
import pytest

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import connect
from amphora.testing import RabbitNode
from helpers import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def serve(url: str, service: str) -> AmqpRpcServer:
    server = AmqpRpcServer(service, url=url)
    server.add_function(lambda a, b: [service, a + b], "add")
    server.serve()
    return server


def test_clients_of_several_services_share_one_queue_and_get_their_own_replies(amqp_url, service):
    services = [f"{service}-{n}" for n in range(3)]
    servers = [serve(amqp_url, name) for name in services]
    clients = [AmqpRpcClient(services[n % 3], url=amqp_url) for n in range(300)]
    try:
        assert len({client.reply_queue for client in clients}) == 1
        results = [(client, n, client.defer.add(n, 1)) for n, client in enumerate(clients)]
        for client, n, result in results:
            assert result.get(timeout=30) == [client.service_name, n + 1]
        queue = connect(amqp_url).channel().queue_declare(clients[0].reply_queue, passive=True)
        assert (queue.message_count, queue.consumer_count) == (0, 1)
    finally:
        gevent.joinall([gevent.spawn(c.stop) for c in clients] + [gevent.spawn(s.stop) for s in servers])


def test_a_stopped_client_gets_the_replies_that_come_while_another_consumes(amqp_url, service):
    server = serve(amqp_url, service)
    running, stopped = AmqpRpcClient(service, url=amqp_url), AmqpRpcClient(service, url=amqp_url)
    try:
        result = stopped.defer(wait_publish=True).add(1, 2)
        stopped.stop()
        assert result.get(timeout=10) == [service, 3]
        assert running.call.add(2, 2) == [service, 4]
    finally:
        running.stop(), server.stop()


def test_other_reply_queue_settings_get_a_queue_of_their_own(amqp_url, service):
    short, default = AmqpRpcClient(service, url=amqp_url, reply_queue_expires=30), AmqpRpcClient(service, url=amqp_url)
    try:
        assert short.reply_queue != default.reply_queue
    finally:
        short.stop(), default.stop()


def test_a_client_given_a_uuid_has_a_reply_queue_of_its_own(amqp_url, service):
    """So that broker permissions can be limited to it (docs/security.rst)."""
    server = serve(amqp_url, service)
    pinned, other = AmqpRpcClient(service, uuid="c0ffee", url=amqp_url), AmqpRpcClient(service, url=amqp_url)
    try:
        assert pinned.reply_queue == f"rpc_{service}_c0ffee_response" != other.reply_queue
        assert (pinned.call.add(1, 1), other.call.add(2, 2)) == ([service, 2], [service, 4])
    finally:
        pinned.stop(), other.stop(), server.stop()


CLIENTS = 1000


@pytest.mark.rabbitmq_only("counts the bindings on the broker")
def test_clients_that_are_gone_leave_no_bindings(amqp_url, service, rabbit_node: RabbitNode):
    """A web tier making a client per request: the shared queue keeps the bindings of live clients only."""
    server = serve(amqp_url, service)
    keeper = AmqpRpcClient(service, url=amqp_url)  # keeps the queue consumed throughout
    try:
        for n in range(CLIENTS):
            client = AmqpRpcClient(service, url=amqp_url)
            assert client.call.add(n, 0) == [service, n]
            client.stop()
        del client
        gc.collect()
        last = AmqpRpcClient(service, url=amqp_url)  # a client joining removes the bindings of those gone
        assert last.call.add(1, 1) == [service, 2]

        def bindings() -> int:
            listed = rabbit_node.ctl("list_bindings", "-q", "destination_name")
            return sum(line.strip() == keeper.reply_queue for line in listed.splitlines())

        # two for each client left (the keeper, the last, and the few a callback still holds), and the default
        # one: not two for each of the thousand
        wait_until(lambda: bindings() < CLIENTS // 10, timeout=30)
        last.stop()
    finally:
        keeper.stop(), server.stop()
