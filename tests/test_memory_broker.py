"""The memory broker's decisions, without greenlets or a network: routing, prefetch and redelivery, TTL and
queue expiry on an injected clock, dead-lettering with x-death, bounded queues, priorities, and the channel
errors RabbitMQ gives for the same mistakes."""

from __future__ import annotations

import pytest

from amphora.amqp import Properties
from amphora.amqp.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from amphora.memory.broker import Broker, Delivery, Published, Session
from amphora.memory.routing import headers_match, topic_matches

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """Records what the broker sends one channel."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.cancelled_tags: list[str] = []

    def deliver(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def cancelled(self, consumer_tag: str) -> None:
        self.cancelled_tags.append(consumer_tag)

    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(clock: Clock) -> Broker:
    return Broker(clock=clock, wall_clock=lambda: 1_700_000_000.0)


def session(broker: Broker, owner: object = "conn") -> tuple[Session, Sink]:
    sink = Sink()
    return broker.open_session(owner, sink), sink


def publish(broker: Broker, body: bytes, exchange: str = "", routing_key: str = "q", **properties: object) -> Published:
    return broker.publish(exchange, routing_key, body, Properties(**properties), mandatory=True)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("orders.*", "orders.new", True),
        ("orders.*", "orders.new.eu", False),
        ("orders.#", "orders", True),
        ("orders.#", "orders.new.eu", True),
        ("#.eu", "orders.new.eu", True),
        ("*.new.*", "orders.new.eu", True),
        ("#", "", True),
        ("orders.*", "orders", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_topic_patterns_match_as_rabbitmq_defines_them(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


def test_headers_bindings_match_all_or_any_and_ignore_x_arguments():
    binding = {"x-match": "all", "client": "c1", "kind": "dead"}
    assert headers_match(binding, {"client": "c1", "kind": "dead", "x-other": 1})
    assert not headers_match(binding, {"client": "c1"})
    assert headers_match({**binding, "x-match": "any"}, {"client": "c1"})
    assert not headers_match({"x-match": "any", "client": "c1"}, {"client": "c2"})


def test_direct_fanout_and_default_exchanges_route_and_mandatory_returns(broker):
    owner, _ = session(broker)
    for name in ("a", "b"):
        broker.declare_queue(owner, name)
    broker.declare_exchange("direct", "direct")
    broker.declare_exchange("fan", "fanout")
    broker.bind_queue("a", "direct", "key-a")
    broker.bind_queue("a", "fan")
    broker.bind_queue("b", "fan")
    assert publish(broker, b"1", "direct", "key-a") is Published.ROUTED
    assert publish(broker, b"2", "fan", "anything") is Published.ROUTED
    assert publish(broker, b"3", "", "b") is Published.ROUTED
    assert publish(broker, b"4", "direct", "nobody") is Published.RETURNED
    assert broker.publish("direct", "nobody", b"5", Properties()) is Published.DROPPED  # not mandatory
    assert broker.declare_queue(owner, "a", passive=True)[1:] == (2, 0)
    assert broker.declare_queue(owner, "b", passive=True)[1:] == (2, 0)
    with pytest.raises(NotFound, match="no exchange 'missing'"):
        publish(broker, b"6", "missing")


def test_prefetch_limits_deliveries_and_acks_let_more_through(broker):
    channel, sink = session(broker)
    broker.declare_queue(channel, "q")
    for i in range(5):
        publish(broker, str(i).encode())
    broker.qos(channel, 2)
    broker.consume(channel, "q", "c1")
    assert sink.bodies() == [b"0", b"1"]
    broker.ack(channel, sink.deliveries[0].delivery_tag)
    assert sink.bodies() == [b"0", b"1", b"2"]
    broker.ack(channel, sink.deliveries[2].delivery_tag, multiple=True)  # acks 2 and 3 (tags 2 and 3)
    assert sink.bodies() == [b"0", b"1", b"2", b"3", b"4"]
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 99"):
        broker.ack(channel, 99)


def test_consumers_share_a_queue_round_robin(broker):
    first, first_sink = session(broker)
    second, second_sink = session(broker)
    broker.declare_queue(first, "q")
    broker.consume(first, "q", "c1", no_ack=True)
    broker.consume(second, "q", "c2", no_ack=True)
    for i in range(4):
        publish(broker, str(i).encode())
    assert first_sink.bodies() == [b"0", b"2"] and second_sink.bodies() == [b"1", b"3"]


def test_nack_and_a_closed_channel_requeue_in_order_marked_redelivered(broker):
    channel, sink = session(broker)
    broker.declare_queue(channel, "q")
    for body in (b"a", b"b", b"c"):
        publish(broker, body)
    broker.consume(channel, "q", "c1")
    first, second, _ = sink.deliveries
    broker.nack(channel, second.delivery_tag, requeue=True)
    assert sink.deliveries[-1].body == b"b" and sink.deliveries[-1].redelivered
    broker.close_session(channel)  # "a", "c" and the redelivered "b" go back, in their order
    other, other_sink = session(broker)
    broker.consume(other, "q", "c2")
    assert other_sink.bodies() == [b"a", b"c", b"b"]
    assert all(d.redelivered for d in other_sink.deliveries)
    assert not first.redelivered


def test_quorum_queues_count_deliveries_in_a_header(broker):
    channel, sink = session(broker)
    broker.declare_queue(channel, "q", durable=True, arguments={"x-queue-type": "quorum"})
    publish(broker, b"a")
    broker.consume(channel, "q", "c1")
    broker.nack(channel, sink.deliveries[0].delivery_tag)
    broker.nack(channel, sink.deliveries[1].delivery_tag)
    assert [(d.properties.headers or {}).get("x-delivery-count") for d in sink.deliveries] == [None, 1, 2]
    with pytest.raises(PreconditionFailed, match="invalid property 'non-durable'"):
        broker.declare_queue(channel, "q2", arguments={"x-queue-type": "quorum"})


def dead_letter_setup(broker: Broker, **queue_arguments: object) -> tuple[Session, Sink]:
    """Queue ``q`` dead-letters to exchange ``dlx`` (fanout), bound to queue ``dead``, consumed."""
    channel, sink = session(broker)
    broker.declare_exchange("dlx", "fanout")
    broker.declare_queue(channel, "dead")
    broker.bind_queue("dead", "dlx")
    broker.declare_queue(channel, "q", arguments={"x-dead-letter-exchange": "dlx", **queue_arguments})
    broker.declare_exchange("requests", "direct")
    broker.bind_queue("q", "requests", "q")
    broker.consume(channel, "dead", "dead-reader", no_ack=True)
    return channel, sink


def test_expired_messages_are_dead_lettered_with_x_death_at_the_head_of_their_queue(broker, clock):
    _, sink = dead_letter_setup(broker)
    publish(broker, b"long", "requests", expiration="5000")
    publish(broker, b"short", "requests", expiration="1000")
    assert broker.next_deadline() == clock.now + 1
    clock.now += 2
    broker.expire()
    assert sink.deliveries == []  # as in RabbitMQ, only the head expires: "short" waits behind "long"
    clock.now += 4
    broker.expire()
    assert sink.bodies() == [b"long", b"short"]
    delivery = sink.deliveries[0]
    assert (delivery.exchange, delivery.routing_key) == ("dlx", "q")
    assert delivery.properties.expiration is None
    headers = delivery.properties.headers or {}
    (death,) = headers["x-death"]
    assert {k: v for k, v in death.items() if k != "time"} == {
        "count": 1,
        "reason": "expired",
        "queue": "q",
        "exchange": "requests",
        "routing-keys": ["q"],
        "original-expiration": "5000",
    }
    assert death["time"].timestamp() == 1_700_000_000
    assert headers["x-first-death-reason"] == "expired" and headers["x-first-death-queue"] == "q"


def test_queue_message_ttl_and_rejections_dead_letter_too(broker, clock):
    channel, sink = dead_letter_setup(broker, **{"x-message-ttl": 100, "x-dead-letter-routing-key": "elsewhere"})
    reader, reader_sink = session(broker)
    publish(broker, b"rejected", "requests")
    broker.consume(reader, "q", "r")
    broker.nack(reader, reader_sink.deliveries[0].delivery_tag, requeue=False)
    broker.cancel(reader, "r")
    publish(broker, b"expired", "requests")
    clock.now += 0.2
    broker.expire()
    assert sink.bodies() == [b"rejected", b"expired"]
    assert [d.routing_key for d in sink.deliveries] == ["elsewhere", "elsewhere"]
    assert [(d.properties.headers or {})["x-death"][0]["reason"] for d in sink.deliveries] == ["rejected", "expired"]


def test_a_retry_loop_counts_each_death_and_a_cycle_of_expiries_is_dropped(broker, clock):
    """q expires into parking, whose consumer rejects back into q: a loop RabbitMQ allows, for it has a
    rejection; a loop of expiries alone is a cycle, whose message RabbitMQ drops."""
    channel, sink = session(broker)
    for exchange in ("to-parking", "to-q"):
        broker.declare_exchange(exchange, "fanout")
    broker.declare_queue(channel, "q", arguments={"x-dead-letter-exchange": "to-parking", "x-message-ttl": 10})
    broker.declare_queue(channel, "parking", arguments={"x-dead-letter-exchange": "to-q"})
    broker.bind_queue("parking", "to-parking")
    broker.bind_queue("q", "to-q")
    broker.consume(channel, "parking", "c")
    publish(broker, b"m")
    for _ in range(2):
        clock.now += 1
        broker.expire()
        broker.nack(channel, sink.deliveries[-1].delivery_tag, requeue=False)
    clock.now += 1
    broker.expire()
    deaths = (sink.deliveries[-1].properties.headers or {})["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [("q", "expired", 3), ("parking", "rejected", 2)]
    broker.declare_queue(channel, "self", arguments={"x-dead-letter-exchange": "to-self", "x-message-ttl": 10})
    broker.declare_exchange("to-self", "fanout")
    broker.bind_queue("self", "to-self")
    publish(broker, b"cycle", "", "self")
    clock.now += 1
    broker.expire()
    assert broker.declare_queue(channel, "self", passive=True)[1] == 0  # expired once into itself: dropped


def test_max_length_drops_the_oldest_into_the_dead_letter_exchange(broker):
    channel, sink = dead_letter_setup(broker, **{"x-max-length": 2, "x-overflow": "drop-head"})
    for body in (b"1", b"2", b"3"):
        assert publish(broker, body, "requests") is Published.ROUTED
    assert sink.bodies() == [b"1"]
    assert (sink.deliveries[0].properties.headers or {})["x-death"][0]["reason"] == "maxlen"
    broker.declare_queue(channel, "full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert publish(broker, b"a", "", "full") is Published.ROUTED
    assert publish(broker, b"b", "", "full") is Published.REFUSED


def test_higher_priorities_are_delivered_first(broker):
    channel, sink = session(broker)
    broker.declare_queue(channel, "q", arguments={"x-max-priority": 5})
    for body, priority in ((b"low", 0), (b"high", 5), (b"over", 9), (b"none", None), (b"mid", 3)):
        publish(broker, body, priority=priority)
    broker.consume(channel, "q", "c", no_ack=True)
    assert sink.bodies() == [b"high", b"over", b"mid", b"low", b"none"]


def test_unused_queues_expire_and_their_deletion_cancels_consumers(broker, clock):
    channel, sink = session(broker)
    broker.declare_queue(channel, "q", arguments={"x-expires": 1000})
    broker.consume(channel, "q", "c")
    clock.now += 5
    broker.expire()
    assert "q" in broker.queues  # consumed: in use
    broker.cancel(channel, "c")
    clock.now += 0.5
    broker.declare_queue(channel, "q", arguments={"x-expires": 1000})  # a declaration renews it
    clock.now += 0.9
    broker.expire()
    assert "q" in broker.queues
    clock.now += 0.2
    broker.expire()
    assert "q" not in broker.queues
    broker.declare_queue(channel, "r")
    broker.consume(channel, "r", "c2")
    broker.delete_queue("r")
    assert sink.cancelled_tags == ["c2"]


def test_exclusive_and_auto_delete_queues(broker):
    mine, _ = session(broker, owner="conn1")
    theirs, _ = session(broker, owner="conn2")
    name = broker.declare_queue(mine, "", exclusive=True)[0]
    assert name.startswith("amq.gen-")
    with pytest.raises(ResourceLocked):
        broker.consume(theirs, name, "c")
    with pytest.raises(ResourceLocked):
        broker.bind_queue(name, "amq.fanout", session=theirs)
    broker.declare_queue(mine, "auto", auto_delete=True)
    broker.consume(theirs, "auto", "c")
    broker.close_session(theirs)
    assert "auto" not in broker.queues
    broker.close_owner("conn1")
    assert name not in broker.queues


def test_declarations_fail_as_rabbitmq_fails_them(broker):
    channel, _ = session(broker)
    broker.declare_queue(channel, "q", durable=True, arguments={"x-expires": 1000})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-expires'"):
        broker.declare_queue(channel, "q", durable=True, arguments={"x-expires": 2000})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable'"):
        broker.declare_queue(channel, "q", arguments={"x-expires": 1000})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-queue-type'"):
        broker.declare_queue(channel, "q", durable=True, arguments={"x-expires": 1000, "x-queue-type": "quorum"})
    broker.declare_queue(channel, "q", durable=True, arguments={"x-expires": 1000, "x-unknown": 1})  # ignored
    with pytest.raises(NotFound, match="no queue 'missing'"):
        broker.declare_queue(channel, "missing", passive=True)
    with pytest.raises(PreconditionFailed, match="invalid arg 'x-expires'"):
        broker.declare_queue(channel, "bad", arguments={"x-expires": 0})
    broker.declare_exchange("x", "direct")
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'type'"):
        broker.declare_exchange("x", "fanout")
    with pytest.raises(AccessRefused):
        broker.declare_queue(channel, "amq.mine")
    broker.consume(channel, "q", "c")
    with pytest.raises(PreconditionFailed, match="in use"):
        broker.delete_queue("q", if_unused=True)
    with pytest.raises(AccessRefused, match="exclusive use"):
        broker.consume(channel, "q", "c2", exclusive=True)


def test_a_restart_keeps_what_rabbitmq_keeps(broker):
    channel, _ = session(broker)
    broker.declare_exchange("durable-x", "direct", durable=True)
    broker.declare_queue(channel, "classic", durable=True)
    broker.declare_queue(channel, "quorum", durable=True, arguments={"x-queue-type": "quorum"})
    broker.declare_queue(channel, "transient")
    for queue in ("classic", "quorum"):
        broker.bind_queue(queue, "durable-x", queue)
        for mode in (1, 2):
            publish(broker, str(mode).encode(), "durable-x", queue, delivery_mode=mode)
    broker.close_session(channel)
    broker.restart()
    assert set(broker.queues) == {"classic", "quorum"} and "durable-x" in broker.exchanges
    assert broker.declare_queue(channel, "classic", durable=True)[1] == 1  # the persistent message only
    assert broker.declare_queue(channel, "quorum", durable=True, arguments={"x-queue-type": "quorum"})[1] == 2


def test_unbinding_and_deleted_queues_take_their_bindings_and_an_auto_delete_exchange_goes_last(broker):
    channel, _ = session(broker)
    broker.declare_exchange("x", "direct", auto_delete=True)
    for queue in ("a", "b"):
        broker.declare_queue(channel, queue)
        broker.bind_queue(queue, "x", "k")
        broker.bind_queue(queue, "x", "k")  # the same binding once
    broker.bind_queue("a", "x", "other")
    assert publish(broker, b"1", "x", "k") is Published.ROUTED
    assert [broker.declare_queue(channel, q, passive=True)[1] for q in ("a", "b")] == [1, 1]
    broker.unbind_queue("a", "x", "k")
    publish(broker, b"2", "x", "k")
    assert [broker.declare_queue(channel, q, passive=True)[1] for q in ("a", "b")] == [1, 2]
    broker.delete_queue("b")
    assert publish(broker, b"3", "x", "k") is Published.RETURNED
    broker.unbind_queue("a", "x", "other")
    assert "x" not in broker.exchanges


def test_a_channel_wide_prefetch_spans_its_consumers(broker):
    channel, sink = session(broker)
    for queue in ("a", "b"):
        broker.declare_queue(channel, queue)
        publish(broker, queue.encode(), "", queue)
    broker.qos(channel, 1, global_qos=True)
    broker.consume(channel, "a", "ca")
    broker.consume(channel, "b", "cb")
    assert sink.bodies() == [b"a"]
    broker.ack(channel, sink.deliveries[0].delivery_tag)
    assert sink.bodies() == [b"a", b"b"]  # the ack on a made room for b's consumer
