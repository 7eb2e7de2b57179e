"""What amphora relies on from the broker, observed the same way on the RabbitMQ node and on memory://: each
test runs on both and asserts what RabbitMQ 3.10 does."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import gevent
import pytest
from gevent.queue import Queue

from amphora.amqp import Properties, connect
from amphora.amqp.errors import ConnectionError, MessageReturned, NotFound, ResourceLocked
from amphora.link import queue_exists
from amphora.memory import memory_node
from amphora.testing.fixtures import BROKERS
from helpers import wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    return any_broker_url


@pytest.fixture
def channel(connection):
    return connection.channel()


def name(kind: str) -> str:
    return f"parity-{kind}-{uuid.uuid4().hex[:8]}"


def consume(channel, queue: str, no_ack: bool = True) -> Queue:
    received: Queue = Queue()
    channel.basic_consume(queue, received.put, no_ack=no_ack)
    return received


def dead_letter_pair(channel, **arguments) -> tuple[str, str, Queue]:
    """A queue dead-lettering to a fanout exchange bound to a consumed 'dead' queue: (queue, dlx, dead letters)."""
    dlx, dead, queue = name("dlx"), name("dead"), name("queue")
    channel.exchange_declare(dlx, "fanout", auto_delete=True)
    channel.queue_declare(dead, exclusive=True)
    channel.queue_bind(dead, dlx)
    channel.queue_declare(queue, exclusive=True, arguments={"x-dead-letter-exchange": dlx, **arguments})
    return queue, dlx, consume(channel, dead)


def test_an_expired_message_is_dead_lettered_with_its_history(channel):
    queue, dlx, letters = dead_letter_pair(channel)
    channel.basic_publish(b"m", "", queue, Properties(expiration="50", message_id="id1", headers={"own": 1}))
    letter = letters.get(timeout=10)
    assert (letter.body, letter.exchange, letter.routing_key) == (b"m", dlx, queue)
    properties = letter.properties
    assert properties.expiration is None and properties.message_id == "id1"
    headers = properties.headers
    (death,) = headers["x-death"]
    assert {key: value for key, value in death.items() if key != "time"} == {
        "count": 1,
        "reason": "expired",
        "queue": queue,
        "exchange": "",
        "routing-keys": [queue],
        "original-expiration": "50",
    }
    assert (headers["x-first-death-reason"], headers["x-first-death-queue"], headers["x-first-death-exchange"]) == (
        "expired",
        queue,
        "",
    )
    assert headers["own"] == 1


def test_a_rejected_message_takes_the_dead_letter_routing_key(channel):
    queue, _, letters = dead_letter_pair(channel, **{"x-dead-letter-routing-key": "elsewhere"})
    channel.basic_publish(b"m", "", queue)
    taken = consume(channel, queue, no_ack=False)
    taken.get(timeout=10).reject(requeue=False)
    letter = letters.get(timeout=10)
    assert letter.routing_key == "elsewhere" and letter.properties.headers["x-death"][0]["reason"] == "rejected"


def test_a_full_queue_drops_its_oldest_into_the_dead_letter_exchange(channel, connection):
    queue, _, letters = dead_letter_pair(channel, **{"x-max-length": 2, "x-overflow": "drop-head"})
    publisher = connection.channel()
    publisher.confirm_select()
    for body in (b"1", b"2", b"3"):
        publisher.basic_publish(body, "", queue).wait(timeout=10)
    letter = letters.get(timeout=10)
    assert letter.body == b"1" and letter.properties.headers["x-death"][0]["reason"] == "maxlen"
    assert channel.queue_declare(queue, passive=True).message_count == 2


def test_priorities_prefetch_and_requeue_order(channel, connection):
    queue = channel.queue_declare(name("prio"), exclusive=True, arguments={"x-max-priority": 5}).queue
    publisher = connection.channel()
    publisher.confirm_select()
    for body, priority in ((b"low", 1), (b"high", 5), (b"mid", 3)):
        publisher.basic_publish(body, "", queue, Properties(priority=priority)).wait(timeout=10)
    channel.basic_qos(prefetch_count=2)
    taken = consume(channel, queue, no_ack=False)
    first, second = taken.get(timeout=10), taken.get(timeout=10)
    assert (first.body, second.body) == (b"high", b"mid") and taken.empty()  # the prefetch holds back "low"
    first.nack(requeue=True)
    again = taken.get(timeout=10)
    assert (again.body, again.redelivered) == (b"high", True)  # requeued to the head of its priority
    second.ack()
    again.ack()
    assert taken.get(timeout=10).body == b"low"


def test_topic_and_headers_exchanges_route_as_rabbitmq_does(channel, connection):
    topic, headers = name("topic"), name("headers")
    channel.exchange_declare(topic, "topic", auto_delete=True)
    channel.exchange_declare(headers, "headers", auto_delete=True)
    orders = channel.queue_declare("", exclusive=True).queue
    assert orders.startswith("amq.gen-")
    channel.queue_bind(orders, topic, "orders.#")
    channel.queue_bind(orders, headers, "", {"x-match": "all", "client": "c1"})
    received = consume(channel, orders)
    publisher = connection.channel()
    publisher.confirm_select()
    publisher.basic_publish(b"1", topic, "orders.new.eu").wait(timeout=10)
    publisher.basic_publish(b"2", topic, "invoices.new").wait(timeout=10)
    publisher.basic_publish(b"3", headers, "", Properties(headers={"client": "c1"})).wait(timeout=10)
    publisher.basic_publish(b"4", headers, "", Properties(headers={"client": "c2"})).wait(timeout=10)
    publisher.basic_publish(b"5", topic, "orders").wait(timeout=10)
    assert [received.get(timeout=10).body for _ in range(3)] == [b"1", b"3", b"5"]
    assert channel.queue_declare(orders, passive=True).message_count == 0 and received.empty()


def test_a_queue_unused_past_its_expiry_is_deleted_and_its_consumers_are_told(channel, connection):
    watched = channel.queue_declare(name("watched"), exclusive=True).queue
    cancelled: Queue = Queue()
    channel.basic_consume(watched, lambda m: None, on_cancel=cancelled.put)
    connection.channel().queue_delete(watched)
    assert isinstance(cancelled.get(timeout=10), str)
    expiring = channel.queue_declare(name("expiring"), arguments={"x-expires": 200}).queue
    channel.queue_bind(expiring, "amq.direct", expiring)
    publisher = connection.channel()
    publisher.confirm_select()

    def routed() -> bool:  # publishing does not count as using the queue (a passive declare does)
        try:
            publisher.basic_publish(b"", "amq.direct", expiring, mandatory=True).wait(timeout=10)
        except MessageReturned:
            return False
        return True

    wait_until(lambda: not routed(), timeout=10)
    assert not queue_exists(connection, expiring)


def test_a_passive_declaration_counts_as_using_a_queue(channel, connection):
    expiring = channel.queue_declare(name("expiring"), arguments={"x-expires": 1000}).queue
    for _ in range(6):  # 1.5 s in all, each declaration well within the expiry of the last
        assert queue_exists(connection, expiring)
        gevent.sleep(0.25)  # the time that passes is what is tested
    channel.queue_delete(expiring)


def test_a_quorum_queue_counts_redeliveries_in_a_header(channel):
    queue = channel.queue_declare(name("quorum"), durable=True, arguments={"x-queue-type": "quorum"}).queue
    try:
        channel.basic_publish(b"m", "", queue)
        taken = consume(channel, queue, no_ack=False)
        first = taken.get(timeout=10)
        first.nack(requeue=True)
        second = taken.get(timeout=10)
        second.nack(requeue=True)
        third = taken.get(timeout=10)
        third.ack()
        counts = [(m.properties.headers or {}).get("x-delivery-count") for m in (first, second, third)]
        assert counts == [None, 1, 2] and third.redelivered
    finally:
        channel.queue_delete(queue)


@pytest.fixture(params=BROKERS)
def restartable(request) -> tuple[str, Callable[[], None]]:
    """A broker of the test's own and how to restart it: a private RabbitMQ node (kill -9, start again on
    the same data) or a memory broker."""
    if request.param == "rabbitmq":
        node = request.getfixturevalue("private_rabbit_node")
        return node.url, node.restart
    url = request.getfixturevalue("amphora_memory_url")
    return url, memory_node(url.removeprefix("memory://")).restart


@pytest.mark.timeout(120)
def test_a_restart_keeps_durable_queues_and_persistent_messages_only(restartable):
    url, restart = restartable
    connection = connect(url)
    channel = connection.channel()
    channel.confirm_select()
    channel.exchange_declare("kept", "direct", durable=True)
    channel.exchange_declare("lost", "direct")
    channel.queue_declare("durable", durable=True)
    channel.queue_declare("transient")
    channel.queue_bind("durable", "kept", "k")
    for body, mode in ((b"persistent", 2), (b"transient", 1)):
        channel.basic_publish(body, "kept", "k", Properties(delivery_mode=mode)).wait(timeout=10)
    closed: Queue = Queue()
    connection.add_close_callback(closed.put)
    restart()
    assert isinstance(closed.get(timeout=60), ConnectionError)
    connection = connect(url)
    assert not queue_exists(connection, "transient")
    checker = connection.channel()
    with pytest.raises(NotFound):
        checker.exchange_declare("lost", passive=True)
    channel = connection.channel()
    channel.confirm_select()
    channel.basic_publish(b"after", "kept", "k", mandatory=True).wait(timeout=10)  # the binding is kept
    received = consume(channel, "durable")
    assert [received.get(timeout=10).body for _ in range(2)] == [b"persistent", b"after"]
    connection.close()


def test_another_connections_exclusive_queue_is_locked_but_takes_messages(amqp_url, connection):
    owner = connect(amqp_url)
    try:
        queue = owner.channel().queue_declare("", exclusive=True).queue
        attempts = {
            "consume": lambda channel: channel.basic_consume(queue, lambda m: None),
            "bind": lambda channel: channel.queue_bind(queue, "amq.fanout"),
            "purge": lambda channel: channel.queue_purge(queue),
            "delete": lambda channel: channel.queue_delete(queue),
        }
        for what, attempt in attempts.items():
            with pytest.raises(ResourceLocked):
                attempt(connection.channel())
                pytest.fail(f"{what} was allowed")
        publisher = connection.channel()
        publisher.confirm_select()
        publisher.basic_publish(b"m", "", queue, mandatory=True).wait(timeout=10)
        assert owner.channel().queue_declare(queue, passive=True).message_count == 1
    finally:
        owner.close()
