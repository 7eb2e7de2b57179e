"""The outbox against a real broker: a bounded confirm window, order kept, nothing lost over a restart."""

from __future__ import annotations

import pytest
from gevent.event import AsyncResult

from amphora import outbox as outbox_module
from amphora.amqp import ConnectionParameters, Properties, connect
from amphora.amqp.errors import NotFound
from amphora.link import Link
from amphora.outbox import Outbox
from amphora.topology import Queue
from helpers import drain, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here given a broker runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def start_outbox(url: str, queue: str, window: int) -> tuple[Link, Outbox]:
    link = Link([ConnectionParameters.from_url(url)], "outbox test", confirm=True)
    link.declare([Queue(queue, durable=True)])
    outbox = Outbox(link, window=window)
    link.start()
    assert link.wait_ready(timeout=30)
    return link, outbox


def test_window_bounds_unconfirmed_publishes_and_keeps_order(amqp_url, service):
    link, outbox = start_outbox(amqp_url, service, window=50)
    peak = [0]

    def on_done(error) -> None:
        assert error is None
        peak[0] = max(peak[0], len(link.channel._unconfirmed))

    for i in range(3000):
        outbox.publish("", service, b"%d" % i, Properties(delivery_mode=2), on_done=on_done)
        peak[0] = max(peak[0], len(link.channel._unconfirmed))
    assert outbox.flush(timeout=60)
    assert peak[0] <= 50
    assert drain(amqp_url, service) == [b"%d" % i for i in range(3000)]
    link.stop()


def test_messages_held_over_a_broker_restart_are_published_in_order(private_rabbit_node):
    link, outbox = start_outbox(private_rabbit_node.url, "held", window=100)
    for i in range(500):
        outbox.publish("", "held", b"%d" % i, Properties(delivery_mode=2))
    private_rabbit_node.kill()
    for i in range(500, 1000):
        outbox.publish("", "held", b"%d" % i, Properties(delivery_mode=2))
    private_rabbit_node.start()
    assert outbox.flush(timeout=60)
    bodies = drain(private_rabbit_node.url, "held")
    numbers = [int(body) for body in bodies]
    assert set(numbers) == set(range(1000))  # at least once: a copy confirmed late may be there twice
    first_seen = sorted(set(numbers), key=numbers.index)
    assert first_seen == list(range(1000))  # in order
    link.stop()


def test_a_publish_the_broker_refuses_fails_alone_after_a_few_tries(amqp_url, service):
    link, outbox = start_outbox(amqp_url, service, window=50)
    outcomes: dict[str, AsyncResult] = {name: AsyncResult() for name in ("before", "refused", "after")}
    for name, exchange in (("before", ""), ("refused", "no-such-exchange"), ("after", "")):
        outbox.publish(exchange, service, name.encode(), Properties(), on_done=outcomes[name].set)
    assert isinstance(outcomes["refused"].get(timeout=30), NotFound)
    assert outcomes["before"].get(timeout=30) is None and outcomes["after"].get(timeout=30) is None
    assert outbox.flush(timeout=10)
    link.stop()


def test_a_message_nacked_again_after_a_reconnect_is_published_again(amqp_url, service, monkeypatch):
    """A nack schedules a reconnect; if the link reconnects first (its node died) and the new connection
    nacks too, the message must still go again: the reconnect scheduled for the old connection does nothing.
    (A full queue with ``reject-publish`` makes the broker nack; the stuck call of the cluster test was so.)"""
    monkeypatch.setattr(outbox_module, "NACK_BACKOFF", 2.0)  # the old reconnect is still due after the new nack
    side = connect(amqp_url).channel()
    side.queue_declare(service, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    side.confirm_select()
    confirmation = side.basic_publish(b"blocker", "", service)
    assert confirmation is not None
    confirmation.wait(timeout=10)  # the queue is full: the broker nacks every publish to it
    link = Link([ConnectionParameters.from_url(amqp_url)], "outbox test", confirm=True)
    outbox = Outbox(link)
    link.start()
    assert link.wait_ready(timeout=30)
    try:
        outbox.publish("", service, b"message", Properties(delivery_mode=2))
        wait_until(lambda: outbox._state.in_flight == 0)  # nacked on the first connection
        link.reset()  # the connection is lost before the reconnect the nack asked for
        wait_until(lambda: link.generation == 2 and link.ready.is_set())
        wait_until(lambda: outbox._state.in_flight == 0 and not outbox._state.unsent)  # published again, nacked again
        side.queue_purge(service)  # room for it now
        assert outbox.flush(timeout=10), "the message nacked on the second connection was never published again"
        assert drain(amqp_url, service) == [b"message"]
    finally:
        link.stop()
        side.connection.close()
