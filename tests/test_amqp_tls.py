"""TLS (amqps://) against real brokers: server verification, host names, client certificates, RPC."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from gevent.event import AsyncResult

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import connect
from amphora.amqp.errors import AuthenticationError, TLSError
from amphora.testing import RabbitNode, TLSCertificates, make_certificates

pytestmark = pytest.mark.timeout(60)


def with_options(url: str, **options: str) -> str:
    return f"{url}?{urlencode(options)}"


@pytest.fixture(scope="module")
def other_certificates(tmp_path_factory: pytest.TempPathFactory) -> TLSCertificates:
    """A second CA (with its own client certificate), which the nodes do not trust nor are trusted by."""
    return make_certificates(str(tmp_path_factory.mktemp("other-ca")))


@pytest.fixture(scope="module")
def strict_tls_node(tls_certificates: TLSCertificates) -> Iterator[RabbitNode]:
    """A node that refuses TLS clients without a certificate signed by its CA."""
    with RabbitNode(tls=tls_certificates, fail_if_no_peer_cert=True) as node:
        yield node


@pytest.fixture
def verified_url(tls_rabbit_node: RabbitNode, tls_certificates: TLSCertificates) -> str:
    return with_options(tls_rabbit_node.tls_url, cafile=tls_certificates.ca)


def test_amqps_verifies_the_server_and_carries_messages(verified_url):
    # Also shows the TLS socket is cooperative: a reader blocking the hub would never let the publish out.
    bodies = [b"over tls", os.urandom(1 << 20)]  # the large one spans many frames and TLS records
    with connect(verified_url) as connection:
        channel = connection.channel()
        queue = channel.queue_declare(exclusive=True).queue
        received: list[bytes] = []
        all_received = AsyncResult()

        def on_message(message):
            received.append(message.body)
            if len(received) == len(bodies):
                all_received.set()

        channel.basic_consume(queue, on_message, no_ack=True)
        channel.confirm_select()
        for body in bodies:
            channel.basic_publish(body, routing_key=queue).wait(timeout=10)
        all_received.get(timeout=10)
    assert received == bodies


def test_server_certificate_from_another_ca_is_a_tls_error(tls_rabbit_node, other_certificates):
    started = time.monotonic()
    with pytest.raises(TLSError, match="certificate verify failed"):
        connect(with_options(tls_rabbit_node.tls_url, cafile=other_certificates.ca), connection_timeout=10)
    assert time.monotonic() - started < 2


def test_verify_none_connects_without_a_ca(tls_rabbit_node):
    with connect(with_options(tls_rabbit_node.tls_url, verify="none")) as connection:
        assert connection.channel().queue_declare(exclusive=True).queue


def test_host_not_in_the_certificate_is_a_tls_error(tls_rabbit_node, tls_certificates):
    # 127.1 is 127.0.0.1 in the short inet_aton form: it reaches the node, but the certificate does not name it.
    url = with_options(tls_rabbit_node.tls_url.replace("@localhost:", "@127.1:"), cafile=tls_certificates.ca)
    started = time.monotonic()
    with pytest.raises(TLSError, match="Hostname mismatch"):
        connect(url, connection_timeout=10)
    assert time.monotonic() - started < 2


def test_server_hostname_names_the_host_to_verify(tls_rabbit_node, tls_certificates):
    url = with_options(
        tls_rabbit_node.tls_url.replace("@localhost:", "@127.1:"),
        cafile=tls_certificates.ca,
        server_hostname="localhost",
    )
    with connect(url) as connection:
        assert connection.channel().queue_declare(exclusive=True).queue


def test_client_certificate_is_accepted_by_a_node_that_requires_one(strict_tls_node, tls_certificates):
    url = with_options(
        strict_tls_node.tls_url,
        cafile=tls_certificates.ca,
        certfile=tls_certificates.client_cert,
        keyfile=tls_certificates.client_key,
    )
    with connect(url) as connection:
        assert connection.channel().queue_declare(exclusive=True).queue


@pytest.mark.parametrize("client_certificate", ["none", "from another CA"])
def test_node_requiring_a_client_certificate_refuses_others_at_once(
    strict_tls_node, tls_certificates, other_certificates, client_certificate
):
    options = {"cafile": tls_certificates.ca}
    if client_certificate != "none":
        options.update(certfile=other_certificates.client_cert, keyfile=other_certificates.client_key)
    started = time.monotonic()
    with pytest.raises(TLSError, match="TLS"):
        connect(with_options(strict_tls_node.tls_url, **options), connection_timeout=10)
    assert time.monotonic() - started < 2


def test_wrong_password_over_tls_is_an_authentication_error(tls_rabbit_node, tls_certificates):
    url = with_options(tls_rabbit_node.tls_url.replace("guest:guest@", "guest:wrong@"), cafile=tls_certificates.ca)
    with pytest.raises(AuthenticationError, match="ACCESS_REFUSED") as info:
        connect(url, connection_timeout=10)
    assert "wrong" not in str(info.value)


def test_rpc_server_and_client_over_amqps(verified_url):
    service = f"svc{uuid.uuid4().hex[:12]}"
    server = AmqpRpcServer(service, url=verified_url)
    client = None
    try:

        @server.add_function
        def add(x, y):
            return x + y

        server.serve()
        client = AmqpRpcClient(service, url=verified_url, timeout=20)
        assert client.call.add(2, 3) == 5
    finally:
        if client is not None:
            client.stop()
        server.stop()
