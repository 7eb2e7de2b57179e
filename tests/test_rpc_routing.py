"""Per-key request queues, tune_function routing, receive_from_queue and IgnoreRequest, on a real broker."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent.event import Event

from amphora import (
    AmqpRpcClient,
    AmqpRpcServer,
    IgnoreRequest,
    NoResult,
    RequestMayHaveRun,
    Unroutable,
)
from amphora.amqp import Channel, connect
from amphora.amqp.errors import NotFound, PreconditionFailed
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


def queued(amqp_url: str, queue: str) -> int:
    """How many messages wait in ``queue``."""
    connection = connect(amqp_url)
    try:
        return connection.channel().queue_declare(queue, passive=True).message_count
    finally:
        connection.close()


@pytest.fixture
def show_server(make_server):
    """A server whose ``show_message(user, text)`` records what it was sent."""
    server = make_server()
    server.shown = []
    server.add_function(lambda user, text: server.shown.append((user, text)) or len(server.shown), "show_message")
    server.serve()
    return server


def test_message_to_a_user_reaches_the_server_receiving_for_them(show_server, make_client):
    client = make_client()
    client.create_new_request_queue("alice")

    @client.tune_function("show_message")
    def by_user(args, kwargs):
        return args[0] if args else kwargs["user"]

    result = client.defer.show_message("alice", "hello")
    show_server.receive_from_queue("alice", max_calls=1, timeout=10)  # blocks until it ran
    assert show_server.shown == [("alice", "hello")]
    assert result.get(timeout=5) == 1
    with pytest.raises(Unroutable, match="bob"):
        client.call.show_message(user="bob", text="nobody has a queue for bob")


def test_routing_key_option_and_queue_with_its_own_key(show_server, make_client):
    client = make_client()
    client.create_new_request_queue("carol", routing_key="user.carol")
    result = client.defer(routing_key="user.carol").show_message("carol", "hi")
    receiver = show_server.receive_from_queue("carol", max_calls=1, block=False)
    assert receiver.wait(timeout=10) and receiver.calls == 1
    assert result.get(timeout=5) == 1


def test_receiving_from_a_missing_queue_is_a_value_error(show_server):
    with pytest.raises(ValueError, match="rpc_.*_queue_nobody"):
        show_server.receive_from_queue("nobody", max_calls=1)


def test_timeout_before_max_calls_raises_gevent_timeout(show_server, make_client):
    make_client().create_new_request_queue("dave")
    started = time.monotonic()
    with pytest.raises(gevent.Timeout):
        show_server.receive_from_queue("dave", max_calls=1, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2


def test_requests_beyond_max_calls_stay_queued_for_the_next_receiver(show_server, make_client, amqp_url, service):
    client = make_client()
    client.create_new_request_queue("erin")
    results = [client.defer(routing_key="erin").show_message("erin", str(i)) for i in range(5)]
    queue = f"rpc_{service}_queue_erin"
    deadline = time.monotonic() + 10
    while queued(amqp_url, queue) < 5 and time.monotonic() < deadline:
        gevent.sleep(0.02)
    receiver = show_server.receive_from_queue("erin", max_calls=2)
    assert receiver.calls == 2 and len(show_server.shown) == 2
    assert queued(amqp_url, queue) == 3  # the rest went back to the queue, none lost
    show_server.receive_from_queue("erin", max_calls=3)
    assert [r.get(timeout=5) for r in results] == [1, 2, 3, 4, 5]
    assert [text for _, text in show_server.shown] == ["0", "1", "2", "3", "4"]


def test_several_receivers_at_once(show_server, make_client):
    client = make_client()
    for user in ("frank", "grace"):
        client.create_new_request_queue(user)
    receivers = {user: show_server.receive_from_queue(user, max_calls=2, block=False) for user in ("frank", "grace")}
    results = [client.defer(routing_key=user).show_message(user, "x") for user in ("frank", "grace") for _ in "ab"]
    for receiver in receivers.values():
        assert receiver.wait(timeout=10)
    assert sorted(user for user, _ in show_server.shown) == ["frank", "frank", "grace", "grace"]
    assert sorted(r.get(timeout=5) for r in results) == [1, 2, 3, 4]


def test_removed_queue_ends_its_receiver_and_routes_nothing_more(show_server, make_client):
    client = make_client()
    client.create_new_request_queue("heidi")
    receiver = show_server.receive_from_queue("heidi", block=False)
    client.remove_request_queue("heidi")
    assert receiver.wait(timeout=10)
    with pytest.raises(Unroutable):
        client.call(routing_key="heidi").show_message("heidi", "gone")
    client.remove_request_queue("heidi")  # removing it again is harmless


def test_stop_ends_a_receiver_without_limits(show_server, make_client):
    make_client().create_new_request_queue("ivan")
    receiver = show_server.receive_from_queue("ivan", block=False)
    receiver.stop()
    assert receiver.wait(timeout=5) and receiver.calls == 0


@pytest.mark.timeout(120)
def test_receiver_survives_a_broker_restart(private_rabbit_node, service):
    url = private_rabbit_node.url
    server = AmqpRpcServer(service, url=url)
    server.add_function(lambda text: text.upper(), name="shout")
    server.serve()
    client = AmqpRpcClient(service, url=url)
    client.create_new_request_queue("judy")
    receiver = server.receive_from_queue("judy", max_calls=1, block=False)
    private_rabbit_node.restart()  # the durable queue survives; the consumer must come back
    assert client.call(routing_key="judy", timeout=60).shout("still there") == "STILL THERE"
    assert receiver.wait(timeout=10) and receiver.calls == 1
    client.stop()
    server.stop()


def test_ignored_request_goes_to_another_server(make_server, make_client):
    ignoring, serving = make_server(), make_server()
    declined = []

    def decline(x):
        declined.append(x)
        raise IgnoreRequest()

    ignoring.add_function(decline, name="work")
    serving.add_function(lambda x: x * 2, name="work")
    ignoring.serve()
    serving.serve()
    client = make_client()
    results = [client.defer.work(i) for i in range(10)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]


def test_request_only_an_ignoring_server_sees_is_redelivered_slowly(make_server, make_client):
    server = make_server()
    attempts = []

    def decline():
        attempts.append(time.monotonic())
        raise IgnoreRequest()

    server.add_function(decline, name="work")
    server.serve()
    with pytest.raises(NoResult):
        make_client().call(timeout=2.5).work()
    # one attempt per IGNORE_BACKOFF (1 s) at most, instead of a tight redelivery loop
    assert 1 <= len(attempts) <= 4


def test_server_creates_expiring_queues_and_serves_only_them(make_server, make_client, amqp_url, service):
    server = make_server(consume_default_queue=False)
    server.add_function(lambda: "keyed", name="where")
    server.serve()
    server.create_new_request_queue("kate", expires=0.5)
    client = make_client()
    result = client.defer(routing_key="kate").where()
    server.receive_from_queue("kate", max_calls=1, timeout=10)
    assert result.get(timeout=5) == "keyed"
    with pytest.raises(RequestMayHaveRun):
        client.call(timeout=0.5).where()  # the default queue has no consumer on this server
    # unused for longer than its expiry, the queue goes (asking sooner would count as a use)
    gevent.sleep(1.0)
    with pytest.raises(Unroutable):
        client.call(routing_key="kate").where()


def test_remove_if_unused_refuses_while_a_server_receives(show_server, make_client):
    client = make_client()
    client.create_new_request_queue("liam")
    receiver = show_server.receive_from_queue("liam", block=False)
    with pytest.raises(PreconditionFailed):
        client.remove_request_queue("liam", if_unused=True)
    receiver.stop()
    assert receiver.wait(timeout=5)


@pytest.mark.rabbitmq_only("looks into the network channel's gathered acks")
def test_receive_from_queue_returns_once_its_request_is_acknowledged(show_server, make_client):
    client = make_client()
    client.create_new_request_queue("pat")
    result = client.defer(routing_key="pat").show_message("pat", "x")
    show_server.receive_from_queue("pat", max_calls=1, timeout=10)
    channel = show_server.transport.consumer.channel
    assert not channel._acks.unacked and not channel._acks.gathered  # acked, and not waiting to be sent
    assert channel.connection.write_backlog == 0  # handed to the socket
    assert result.get(timeout=5) == 1


@pytest.mark.rabbitmq_only("patches the network channel (amphora.amqp.Channel)")
def test_finished_receiver_takes_back_nothing_while_its_cancel_waits(
    show_server, make_client, amqp_url, service, monkeypatch
):
    """The broker confirms a receiver's cancel late (its channel is busy): its last request must not be acked
    before, or the broker sends it the next one, which it rejects, again and again."""
    client = make_client()
    client.create_new_request_queue("olga")
    results = [client.defer(routing_key="olga").show_message("olga", str(i)) for i in range(3)]
    wait_until(lambda: queued(amqp_url, f"rpc_{service}_queue_olga") == 3)
    rejects = []
    cancelled = Event()
    basic_cancel, basic_reject = Channel.basic_cancel, Channel.basic_reject

    def slow_cancel(channel: Channel, consumer_tag: str) -> None:
        gevent.sleep(0.5)  # other operations before it on the channel
        basic_cancel(channel, consumer_tag)
        cancelled.set()

    def counted_reject(channel: Channel, delivery_tag: int, requeue: bool = True) -> None:
        rejects.append(delivery_tag)
        basic_reject(channel, delivery_tag, requeue)

    monkeypatch.setattr(Channel, "basic_cancel", slow_cancel)
    monkeypatch.setattr(Channel, "basic_reject", counted_reject)
    show_server.receive_from_queue("olga", max_calls=1, timeout=10)
    assert cancelled.wait(timeout=5)
    assert len(rejects) == 0
    for _ in range(2):  # the next receivers take the others, each once
        show_server.receive_from_queue("olga", max_calls=1, timeout=10)
    assert [text for _, text in show_server.shown] == ["0", "1", "2"]
    assert [r.get(timeout=5) for r in results] == [1, 2, 3]


@pytest.mark.timeout(90)
def test_a_request_queue_made_not_durable_is_gone_after_a_broker_restart(private_rabbit_node, service):
    node = private_rabbit_node
    client = AmqpRpcClient(service, url=node.url, timeout=5)
    try:
        client.create_new_request_queue("kept")
        client.create_new_request_queue("passing", durable=False)
        node.stop()
        node.start()
        channel = connect(node.url).channel()
        channel.queue_declare(f"rpc_{service}_queue_kept", passive=True)  # a durable one survives
        with pytest.raises(NotFound):
            channel.queue_declare(f"rpc_{service}_queue_passing", passive=True)
    finally:
        client.stop()


def test_quorum_request_queues_cannot_be_made_not_durable(amqp_url, service):
    client = AmqpRpcClient(service, url=amqp_url, queue_type="quorum")
    try:
        with pytest.raises(ValueError, match="quorum queues are always durable"):
            client.create_new_request_queue("passing", durable=False)
    finally:
        client.stop()
