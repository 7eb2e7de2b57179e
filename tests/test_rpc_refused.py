"""Messages the broker can never take, and requests that come back dead-lettered: a call fails alone, with an
error that tells the truth, and the client keeps working."""

from __future__ import annotations

import time

import pytest

from amphora.amqp import frames
from amphora.amqp.errors import ConnectionClosed

pytestmark = pytest.mark.timeout(60)

BIG = {"big": "h" * 1_000_000}


@pytest.fixture
def echo_client(make_server, make_client):
    server = make_server()
    server.add_function(lambda text: text, name="echo")
    server.serve()
    return make_client()


def test_a_header_that_cannot_fit_a_frame_fails_its_call_at_once(echo_client):
    client = echo_client
    started = time.monotonic()
    with pytest.raises(ValueError, match="frame_max"):
        client.call(timeout=10, headers=BIG).echo("hi")
    with pytest.raises(ValueError, match="frame_max"):
        client.defer(timeout=10, headers=BIG).echo("hi")
    with pytest.raises(ValueError, match="frame_max"):
        client.cast(headers=BIG).echo("hi")
    with pytest.raises(ValueError, match="routing key"):
        client.call(timeout=10, routing_key="k" * 256).echo("hi")
    assert time.monotonic() - started < 1
    assert len(client._outbox) == 0 and len(client._pending) == 0
    assert client.call(timeout=10).echo("after") == "after"


def test_a_message_the_broker_closes_the_connection_on_leaves_the_outbox(echo_client, monkeypatch):
    client = echo_client
    monkeypatch.setattr(frames, "check_content_header", lambda size, frame_max: None)  # as if it fit
    refused = client.defer(timeout=30, headers=BIG).echo("refused")
    others = [client.defer(timeout=30).echo(n) for n in range(20)]
    with pytest.raises(ConnectionClosed) as info:
        refused.get(timeout=20)
    assert info.value.code == 501  # FRAME_ERROR
    assert [result.get(timeout=20) for result in others] == list(range(20))
    assert client.call(timeout=10).echo("after") == "after"
    assert client._outbox.flush(timeout=5)
