"""Private RabbitMQ nodes for tests: :class:`RabbitNode`, :class:`RabbitCluster` and pytest fixtures built on them.

A node runs Debian's (or any) ``rabbitmq-server`` on free ports with all its state in a temporary
directory, so tests never touch a broker the machine already runs, and can kill, freeze and restart it.
Use the fixtures from a ``conftest.py``::

    pytest_plugins = ["amphora.testing"]

- ``rabbit_node`` (session): one node shared by the whole run; ``amqp_url`` is its URL.
- ``private_rabbit_node`` (function): a node of the test's own, for tests that kill or freeze it.
- ``tls_certificates`` (session): a test CA with server and client certificates (:func:`make_certificates`).
- ``tls_rabbit_node`` (session): a node that also listens for TLS; ``tls_url`` is its ``amqps://`` URL.
- ``rabbit_cluster`` (function): three nodes of the test's own joined into a cluster (:class:`RabbitCluster`).
- ``amphora_service``, ``amphora_memory_url``, ``any_broker_url``, ``amphora_server``, ``amphora_client``:
  for tests without a broker (``memory://``) or on both (:mod:`amphora.testing.fixtures`).

:class:`~amphora.testing.faultproxy.FaultProxy` (imported from its module) cuts, stalls or delays the network
between processes and a node on demand.

Set ``RABBITMQ_SERVER_BIN`` if ``rabbitmq-server`` is not in ``/usr/lib/rabbitmq/bin`` or on the PATH.

Why not pytest-rabbitmq: it starts and stops a node per session only, with no kill -9, freeze (SIGSTOP),
restart on the same data directory or memory alarm, which the fault tests need, and it does not switch to
the ``rabbitmq`` user when run as root, which Debian's Erlang cookie and data directories require.
"""

from __future__ import annotations

from collections.abc import Iterator

from .cluster import RabbitCluster
from .node import RabbitNode, RabbitNodeError, free_port
from .tls import TLSCertificates, make_certificates

__all__ = ["RabbitCluster", "RabbitNode", "RabbitNodeError", "TLSCertificates", "free_port", "make_certificates"]


# --- pytest fixtures (use with ``pytest_plugins = ["amphora.testing"]``) ------------------------

try:
    import pytest
except ImportError:  # amphora itself does not need pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    from .fixtures import (  # noqa: F401  (fixtures and hook of the plugin)
        amphora_client,
        amphora_memory_url,
        amphora_server,
        amphora_service,
        any_broker_url,
        pytest_configure,
    )

    @pytest.fixture(scope="session")
    def rabbit_node() -> Iterator[RabbitNode]:
        """A private node shared by the whole test session."""
        with RabbitNode() as node:
            yield node

    @pytest.fixture
    def amqp_url(rabbit_node: RabbitNode) -> str:
        """The URL of the session's node."""
        if not rabbit_node.running:  # a test may have stopped it
            rabbit_node.start()
        return rabbit_node.url

    @pytest.fixture
    def private_rabbit_node() -> Iterator[RabbitNode]:
        """A node of the test's own, free to kill, freeze and restart."""
        with RabbitNode() as node:
            yield node

    @pytest.fixture(scope="session")
    def tls_certificates(tmp_path_factory: pytest.TempPathFactory) -> TLSCertificates:
        """A test CA with a server certificate for localhost and a client certificate."""
        return make_certificates(str(tmp_path_factory.mktemp("tls")))

    @pytest.fixture(scope="session")
    def tls_rabbit_node(tls_certificates: TLSCertificates) -> Iterator[RabbitNode]:
        """A node shared by the session that also listens for TLS (client certificates optional)."""
        with RabbitNode(tls=tls_certificates) as node:
            yield node

    @pytest.fixture
    def rabbit_cluster() -> Iterator[RabbitCluster]:
        """A cluster of three private nodes of the test's own (``.urls``, ``.nodes``, ``kill(i)``, ...)."""
        with RabbitCluster() as cluster:
            yield cluster
