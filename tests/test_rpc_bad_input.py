"""Bad input on the RPC level: malformed requests and replies mixed with good calls, and secrets in logs."""

from __future__ import annotations

import itertools
import logging
import uuid
import zlib

import pytest

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import Properties, connect
from amphora.amqp.errors import AuthenticationError
from helpers import wait_until

MALFORMED_COUNT = 10_000
GOOD_CALLS = 1_000


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def malformed_requests() -> list[tuple[bytes, dict[str, object]]]:
    """One of each kind of bad request, as a body and its properties beyond the usual ones."""
    bomb = zlib.compress(b'{"func": "add", "args": [' + b" " * 3_000_000 + b"]}", 9, wbits=31)
    call = b'{"func": "add", "args": [1, 2]}'
    return [
        (b"not json at all", {}),
        (b'["a", "list"]', {}),
        (b'{"func": "nope", "args": [], "kwargs": {}}', {}),
        (b'{"func": "add", "args": {"x": 1}, "kwargs": {}}', {}),
        (call, {"content_type": "text/x-pickle"}),
        (call, {"content_encoding": "br"}),
        (b"\x1f\x8b broken gzip", {"content_encoding": "gzip"}),
        (bomb, {"content_encoding": "gzip"}),
        (b"x" * 300_000, {}),  # over the server's max_request_size below
        (call, {"reply_to": None}),
        (call, {"message_id": None}),
        (b"", {}),
    ]


def properties(reply_to: str, overrides: dict[str, object]) -> Properties:
    """Fresh properties for one request (a repeated message_id would be a redelivery, answered from memory)."""
    values = {"message_id": uuid.uuid4().hex, "reply_to": reply_to, "content_type": "application/json", **overrides}
    return Properties(**values)


@pytest.mark.timeout(300)
def test_ten_thousand_malformed_requests_among_good_calls(make_server, make_client, amqp_url, service):
    server = make_server(max_request_size=200_000)
    server.add_function(lambda x, y: x + y, name="add")
    server.serve()
    client = make_client(timeout=240)
    channel = connect(amqp_url).channel()
    channel.confirm_select()
    bad = itertools.cycle(malformed_requests())
    results = []
    for i in range(MALFORMED_COUNT):
        body, overrides = next(bad)
        channel.basic_publish(body, f"rpc_{service}_request", "", properties(client.uuid, overrides))
        if i % (MALFORMED_COUNT // GOOD_CALLS) == 0:
            results.append((i, client.defer.add(i, 1)))
        if i % 500 == 0:  # garbage into the reply queue too: replies to nobody, or not even JSON
            channel.basic_publish(b"\xff garbage", "", client.reply_queue, Properties(correlation_id="nobody"))
    assert [result.get(timeout=240) for _, result in results] == [i + 1 for i, _ in results]
    dead = f"rpc_{service}_dead"
    wait_until(lambda: channel.queue_declare(dead, passive=True).message_count == MALFORMED_COUNT, timeout=120)
    assert client.call.add(1, 1) == 2  # and the server goes on serving
    channel.queue_delete(dead)  # a quarter gigabyte of refused bodies the session's node need not keep


@pytest.mark.timeout(60)
@pytest.mark.rabbitmq_only("the memory broker has no passwords to refuse")
def test_passwords_never_reach_logs_or_reprs(amqp_url, caplog, service):
    secret = "s3cret-Pa55"
    url = amqp_url.replace("guest:guest@", f"guest:{secret}@")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as info:
        AmqpRpcClient(service, url=url)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in caplog.text
    assert "guest:***@" in caplog.text or "ACCESS_REFUSED" in str(info.value)


@pytest.mark.parametrize("concurrency", [0, 65_536])
def test_a_concurrency_amqp_cannot_carry_is_refused_at_construction(concurrency):
    with pytest.raises(ValueError, match=f"concurrency must be from 1 to 65535 .* not {concurrency}"):
        AmqpRpcServer("svc", url="amqp://guest:guest@127.0.0.1:1/", concurrency=concurrency)
