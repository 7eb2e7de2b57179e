"""The memory broker behind the connection API: URLs, when callbacks run, channel errors, message TTL on the
real clock, a broker that closes every connection, and the fixtures users get."""

from __future__ import annotations

import subprocess
import sys

import gevent
import pytest
from gevent.queue import Queue

from amphora.amqp import ConnectionParameters, Properties, connect, open_connection
from amphora.amqp.errors import ConnectionClosed, InvalidURL, MessageReturned, NotFound
from amphora.memory import MemoryConnection, forget_node, memory_node

pytestmark = pytest.mark.timeout(20)


def test_memory_urls_name_separate_brokers():
    default = ConnectionParameters.from_url("memory://")
    named = ConnectionParameters.from_url("memory://tests")
    assert default.memory and default.host == "default" and default.url == "memory://default"
    assert named.memory and named.host == "tests"
    assert ConnectionParameters.from_url("memory://tests?frame_max=8192&channel_max=2").frame_max == 8192
    assert not ConnectionParameters.from_url("amqp://h/").memory
    with pytest.raises(InvalidURL, match="memory://"):
        ConnectionParameters.from_url("nats://h")
    first, second = connect("memory://one"), open_connection(named)
    try:
        assert isinstance(first, MemoryConnection) and isinstance(second, MemoryConnection)
        first.channel().queue_declare("only-in-one")
        with pytest.raises(NotFound):
            second.channel().queue_declare("only-in-one", passive=True)
    finally:
        forget_node("one")
        forget_node("tests")


@pytest.fixture
def connection(amphora_memory_url):
    conn = connect(amphora_memory_url)
    yield conn
    conn.close()


def test_deliveries_and_confirms_come_in_the_reader_never_inside_publish(connection):
    channel = connection.channel()
    channel.confirm_select()
    queue = channel.queue_declare("", exclusive=True).queue
    publishing = []
    seen: Queue = Queue()
    channel.basic_consume(queue, lambda m: seen.put((m.body, bool(publishing), gevent.getcurrent())), no_ack=True)
    publishing.append(True)
    confirmation = channel.basic_publish(b"x", "", queue)
    settled_in = []
    confirmation.add_done_callback(lambda c: settled_in.append(gevent.getcurrent()))
    publishing.clear()
    assert not confirmation.done  # settled later, by the reader
    confirmation.wait(timeout=5)
    body, during_publish, reader = seen.get(timeout=5)
    assert body == b"x" and not during_publish
    assert settled_in == [reader] and reader is not gevent.getcurrent()


def test_a_synchronous_method_returns_after_what_the_broker_sent_before(connection):
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).queue
    received = []
    tag = channel.basic_consume(queue, lambda m: received.append(m.body), no_ack=True)
    for i in range(3):
        channel.basic_publish(str(i).encode(), "", queue)
    channel.basic_cancel(tag)  # as with RabbitMQ, deliveries sent before its answer reach the callback first
    assert received == [b"0", b"1", b"2"]


def test_publishing_to_a_missing_exchange_closes_the_channel_after_the_publish(connection):
    channel = connection.channel()
    channel.confirm_select()
    closed: Queue = Queue()
    channel.add_close_callback(closed.put)
    confirmation = channel.basic_publish(b"x", "no-such-exchange", "")  # returns: the error comes later
    with pytest.raises(NotFound, match="no exchange 'no-such-exchange'"):
        confirmation.wait(timeout=5)
    assert isinstance(closed.get(timeout=5), NotFound) and not channel.is_open
    assert connection.is_open and connection.channel().is_open  # only that channel


def test_unroutable_mandatory_publish_comes_back_to_its_return_callback_without_confirms(connection):
    channel = connection.channel()
    returned: Queue = Queue()
    channel.add_return_callback(lambda message, error: returned.put((message.body, error)))
    channel.basic_publish(b"lost", "amq.direct", "nobody", Properties(message_id="m1"), mandatory=True)
    body, error = returned.get(timeout=5)
    assert body == b"lost" and isinstance(error, MessageReturned) and error.reply_code == 312


def test_message_ttl_runs_on_the_clock_and_dead_letters(connection):
    channel = connection.channel()
    channel.exchange_declare("dlx", "fanout")
    dead = channel.queue_declare("", exclusive=True).queue
    channel.queue_bind(dead, "dlx")
    waiting = channel.queue_declare("", exclusive=True, arguments={"x-dead-letter-exchange": "dlx"}).queue
    letters: Queue = Queue()
    channel.basic_consume(dead, letters.put, no_ack=True)
    channel.basic_publish(b"late", "", waiting, Properties(expiration="50"))
    letter = letters.get(timeout=5)
    assert letter.body == b"late" and letter.properties.headers["x-death"][0]["reason"] == "expired"


def test_a_client_and_server_carry_on_after_the_broker_closes_every_connection(
    amphora_server, amphora_client, amphora_memory_url, caplog
):
    server = amphora_server()
    server.add_function(lambda x: x * 2, name="double")
    client = amphora_client()
    assert client.call.double(2) == 4
    node = memory_node(amphora_memory_url.removeprefix("memory://"))
    connections = len(node.connections)
    node.close_connections()  # 320 CONNECTION_FORCED, as when RabbitMQ shuts down: both reconnect
    assert client.call(timeout=10).double(3) == 6
    lost = [r for r in caplog.records if "CONNECTION_FORCED" in r.getMessage()]
    assert connections and len(lost) == connections


def test_user_fixtures_serve_a_service_on_a_memory_broker_of_the_tests_own(
    amphora_server, amphora_client, amphora_service, amphora_memory_url
):
    def add(x, y):
        return x + y

    server = amphora_server(add)
    client = amphora_client()
    assert client.call.add(2, 3) == 5
    assert server.service_name == client.service_name == amphora_service
    assert amphora_memory_url.startswith("memory://test-")


def test_a_connection_the_broker_ends_leaves_no_reader_behind(connection):
    channel = connection.channel()
    closed: Queue = Queue()
    connection.add_close_callback(closed.put)
    reader = connection._reader
    connection.end_soon(ConnectionClosed(320, "CONNECTION_FORCED"))
    assert isinstance(closed.get(timeout=5), ConnectionClosed) and not channel.is_open
    reader.join(timeout=5)
    assert reader.dead


PLUGIN_USER = """
import pytest

pytest_plugins = ["amphora.testing"]


def test_on_any_broker(any_broker_url, amphora_server, amphora_client):
    amphora_server(len, url=any_broker_url)
    assert amphora_client(url=any_broker_url).call.len("abc") == 3


@pytest.mark.rabbitmq_only("needs rabbitmqctl")
def test_on_rabbitmq_only(any_broker_url):
    pass
"""


@pytest.mark.timeout(60)
def test_any_broker_url_parametrizes_and_rabbitmq_only_skips_the_memory_run(tmp_path):
    (tmp_path / "test_user.py").write_text(PLUGIN_USER)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "memory", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert "1 passed, 1 skipped, 2 deselected" in ran.stdout, ran.stdout + ran.stderr
    assert "RabbitMQ only: needs rabbitmqctl" in ran.stdout
