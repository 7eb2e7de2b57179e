"""Every test that touches the network runs against a private RabbitMQ node (see amphora.testing)."""

from __future__ import annotations

import uuid

import pytest

from amphora import AmqpRpcClient, AmqpRpcServer

pytest_plugins = ["amphora.testing"]


@pytest.fixture
def service() -> str:
    return f"svc{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_server(amqp_url, service):
    servers = []

    def make(**options) -> AmqpRpcServer:
        server = AmqpRpcServer(service, url=amqp_url, **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_client(amqp_url, service):
    clients = []

    def make(**options) -> AmqpRpcClient:
        client = AmqpRpcClient(service, url=amqp_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()
