"""Every test that touches the network runs against a private RabbitMQ node (see amphora.testing)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gevent.queue import Queue

from amphora import AmqpRpcClient, AmqpRpcFanoutClient, AmqpRpcServer
from amphora.amqp import connect
from helpers import ServerProcess

pytest_plugins = ["amphora.testing"]


@pytest.fixture
def connection(amqp_url):
    """An AMQP connection to the session's node, closed at the end."""
    conn = connect(amqp_url)
    yield conn
    conn.close()


@pytest.fixture
def service() -> str:
    return f"svc{uuid.uuid4().hex[:12]}"


def stopped_at_the_end(kind: type, service: str, url: str) -> Iterator[Callable[..., Any]]:
    """A factory of ``kind(service, url=url, **options)`` whose products are stopped when the test ends."""
    made = []

    def make(**options: Any) -> Any:
        instance = kind(service, url=url, **options)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()


@pytest.fixture
def make_server(amqp_url, service):
    yield from stopped_at_the_end(AmqpRpcServer, service, amqp_url)


@pytest.fixture
def make_client(amqp_url, service):
    yield from stopped_at_the_end(AmqpRpcClient, service, amqp_url)


@pytest.fixture
def make_fanout_client(amqp_url, service):
    yield from stopped_at_the_end(AmqpRpcFanoutClient, service, amqp_url)


@pytest.fixture
def execution_log(tmp_path) -> Path:
    """A file where server processes log each execution (see helpers.executions)."""
    path = tmp_path / "executions.log"
    path.touch()
    return path


@pytest.fixture
def start_server(service, execution_log):
    """Start servers of the test's service in child processes (tests/rpc_process.py); killed at the end."""
    processes: list[ServerProcess] = []

    def start(url: str, *options: str) -> ServerProcess:
        process = ServerProcess(service, url, execution_log, *options)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.process.poll() is None:
            process.kill()


@pytest.fixture
def spy(amqp_url):
    """``spy(exchange, routing_key)``: a Queue receiving a copy of every message published so."""
    connection = connect(amqp_url)

    def attach(exchange: str, routing_key: str = "") -> Queue:
        channel = connection.channel()
        name = channel.queue_declare("", exclusive=True).queue
        channel.queue_bind(name, exchange, routing_key)
        copies: Queue = Queue()
        channel.basic_consume(name, copies.put, no_ack=True)
        return copies

    yield attach
    connection.close()
