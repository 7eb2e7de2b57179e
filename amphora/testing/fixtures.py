"""pytest fixtures for testing services with the in-process broker (``memory://``) or against both brokers.

Loaded with the other fixtures of :mod:`amphora.testing` (``pytest_plugins = ["amphora.testing"]``):

- ``amphora_service``: a service name of the test's own.
- ``amphora_memory_url``: a ``memory://`` URL naming a broker of the test's own, dropped after the test.
- ``any_broker_url``: parametrizes the test over the session's RabbitMQ node and a memory broker; a test
  marked ``@pytest.mark.rabbitmq_only("why")`` runs on the node only.
- ``amphora_server`` and ``amphora_client``: factories of served servers and of clients of the test's
  service, on the test's memory broker unless given a ``url``; stopped after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..client import AmqpRpcClient
from ..memory import forget_node
from ..server import AmqpRpcServer

BROKERS = ("rabbitmq", "memory")
"""The ids of ``any_broker_url``'s parameters: ``test_x[rabbitmq]``, ``test_x[memory]``."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rabbitmq_only(reason): with any_broker_url, run on the RabbitMQ node only (not on memory://)"
    )


@pytest.fixture
def amphora_service() -> str:
    """A service name no other test uses."""
    return f"svc{uuid.uuid4().hex[:12]}"


@pytest.fixture
def amphora_memory_url() -> Iterator[str]:
    """The URL of an in-process broker of the test's own (``memory://test-...``), dropped after the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    forget_node(name)


@pytest.fixture(params=BROKERS)
def any_broker_url(request: pytest.FixtureRequest) -> str:
    """The URL of the session's RabbitMQ node, then of a memory broker of the test's own: the test runs on each."""
    if request.param == "rabbitmq":
        return str(request.getfixturevalue("amqp_url"))
    marker = request.node.get_closest_marker("rabbitmq_only")
    if marker is not None:
        pytest.skip(f"RabbitMQ only: {marker.args[0] if marker.args else marker.kwargs.get('reason', '')}")
    return str(request.getfixturevalue("amphora_memory_url"))


def _stopped_after(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory calling ``make``, whose products are stopped after the test (the last made first)."""
    made: list[Any] = []

    def factory(*args: Any, **options: Any) -> Any:
        made.append(make(*args, **options))
        return made[-1]

    yield factory
    for instance in reversed(made):
        instance.stop()


@pytest.fixture
def amphora_server(amphora_service: str, amphora_memory_url: str) -> Iterator[Callable[..., AmqpRpcServer]]:
    """``amphora_server(*functions, url=None, **options)``: a served server of the test's service with
    ``functions`` under their own names (add more with ``add_function``), on the test's memory broker unless
    ``url`` says otherwise; stopped after the test."""

    def serve(*functions: Callable[..., Any], url: str | None = None, **options: Any) -> AmqpRpcServer:
        server = AmqpRpcServer(amphora_service, url=url or amphora_memory_url, **options)
        for function in functions:
            server.add_function(function)
        server.serve()
        return server

    yield from _stopped_after(serve)


@pytest.fixture
def amphora_client(amphora_service: str, amphora_memory_url: str) -> Iterator[Callable[..., AmqpRpcClient]]:
    """``amphora_client(url=None, **options)``: a client of the test's service, on the test's memory broker
    unless ``url`` says otherwise; stopped after the test."""

    def make(url: str | None = None, **options: Any) -> AmqpRpcClient:
        return AmqpRpcClient(amphora_service, url=url or amphora_memory_url, **options)

    yield from _stopped_after(make)
