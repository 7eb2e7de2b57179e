"""Publish/subscribe on a service's topic exchange, from clients and servers, through broker restarts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from gevent.queue import Empty, Queue

from amphora import AmqpRpcClient, AmqpRpcServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def collector() -> tuple[Queue, Callable[[str, Any], None]]:
    events: Queue = Queue()
    return events, lambda topic, data: events.put((topic, data))


def test_events_reach_every_matching_subscriber(make_server, make_client):
    server, client = make_server(), make_client()
    server.serve()
    on_server, to_server = collector()
    on_client, to_client = collector()
    server.subscribe("orders.*", to_server)
    client.subscribe("orders.#", to_client)
    client.publish("users.created", {"id": 0}).get(timeout=10)
    client.publish("orders.created", {"id": 1}).get(timeout=10)
    server.publish("orders.paid.late", {"id": 2}).get(timeout=10)
    assert on_server.get(timeout=10) == ("orders.created", {"id": 1})
    assert [on_client.get(timeout=10) for _ in range(2)] == [
        ("orders.created", {"id": 1}),
        ("orders.paid.late", {"id": 2}),
    ]
    with pytest.raises(Empty):
        on_server.get(timeout=0.3)  # neither users.created nor the three-word topic match orders.*


def test_named_subscription_keeps_events_while_away(make_client):
    client = make_client()
    missed, to_missed = collector()
    client.subscribe("news", to_missed, name="reader").cancel()
    client.publish("news", "while away").get(timeout=10)
    events, to_events = collector()
    client.subscribe("news", to_events, name="reader")
    assert events.get(timeout=10) == ("news", "while away")
    assert missed.empty()


@pytest.mark.timeout(120)
def test_subscription_survives_a_broker_restart(private_rabbit_node, service):
    client = AmqpRpcClient(service, url=private_rabbit_node.url)
    server = AmqpRpcServer(service, url=private_rabbit_node.url)
    server.serve()
    events, to_events = collector()
    server.subscribe("alerts.*", to_events)
    private_rabbit_node.restart()
    client.publish("alerts.disk", "full").get(timeout=60)
    assert events.get(timeout=30) == ("alerts.disk", "full")
    client.stop()
    server.stop()
