"""Links of one process share their connection's main channel (issue 26.4): a bounded number of channels,
what one link causes (a refused declaration, consumer or publish, a reset) stays that link's, and a link that
leaves hands back what it received and did not acknowledge."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent.event import AsyncResult, Event

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.amqp import ConnectionParameters, Properties
from amphora.amqp.errors import NotFound, PreconditionFailed
from amphora.connections import LINKS_PER_CONNECTION, SharedConnections
from amphora.link import Link
from amphora.outbox import Outbox
from amphora.testing import RabbitNode
from amphora.topology import Queue
from helpers import drain, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def make_link(amqp_url: str) -> Iterator[Callable[..., Link]]:
    """Started publishing links on connections of their own (not the process's), stopped at the end."""
    connections = SharedConnections()
    links: list[Link] = []

    def make(*declarations: Queue, wait: bool = True, confirm: bool = True, prefetch: int = 0) -> Link:
        link = Link([ConnectionParameters.from_url(amqp_url)], f"link {len(links)}", confirm=confirm,
                    prefetch=prefetch, connections=connections)  # fmt: skip
        link.declare(declarations)
        links.append(link)
        link.start()
        if wait:
            assert link.wait_ready(timeout=30)
        return link

    yield make
    for link in links:
        link.stop()


def broker_channels(node: RabbitNode) -> int:
    return sum(int(n) for n in node.ctl("list_connections", "-q", "--no-table-headers", "channels").split())


def test_two_hundred_clients_and_a_server_stand_on_a_channel_a_connection(private_rabbit_node, service):
    url, sides = private_rabbit_node.url, 201
    server = AmqpRpcServer(service, url=url)
    server.add_function(lambda x: x + 1, "inc")
    server.serve()
    starting = [gevent.spawn(AmqpRpcClient, service, url=url) for _ in range(sides - 1)]
    gevent.joinall(starting, raise_error=True)
    clients = [g.value for g in starting]
    try:
        calling = [gevent.spawn(client.call(timeout=60).inc, n) for n, client in enumerate(clients)]
        gevent.joinall(calling, raise_error=True)
        assert [g.value for g in calling] == [n + 1 for n in range(sides - 1)]
        for role in ("publisher", "consumer"):
            channels = {id(getattr(side.transport, role).channel) for side in (server, *clients)}
            assert len(channels) == math.ceil(sides / LINKS_PER_CONNECTION)
        assert broker_channels(private_rabbit_node) == 2 * math.ceil(sides / LINKS_PER_CONNECTION)
    finally:
        gevent.joinall([gevent.spawn(client.stop) for client in clients])
        server.stop()
    wait_until(lambda: broker_channels(private_rabbit_node) == 0, timeout=30)


def test_publishing_links_share_the_channel_and_the_last_to_stop_closes_it(make_link):
    first, second = make_link(), make_link()
    shared = first.channel
    assert shared is not None and second.channel is shared
    first.stop()
    assert shared.is_open and second.ready.is_set() and second.channel is shared
    second.stop()
    assert not shared.is_open


def test_a_declaration_refused_for_one_link_raises_there_and_leaves_the_shared_channel_alone(make_link, service):
    first, second = make_link(Queue(service, durable=True)), make_link()
    shared, generations = first.channel, (first.generation, second.generation)
    with pytest.raises(PreconditionFailed):
        second.declare([Queue(service, durable=False)])  # other arguments: the broker refuses
    assert shared is not None and shared.is_open and first.channel is second.channel is shared
    assert (first.generation, second.generation) == generations
    second.declare([Queue(f"{service}.other")])  # the refused declaration was forgotten, the link works on


def test_a_link_whose_declaration_is_refused_at_setup_reports_it_and_others_stay_up(make_link, service):
    first = make_link(Queue(service, durable=True))
    shared, generation = first.channel, first.generation
    refused = make_link(Queue(service, durable=False), wait=False)
    with pytest.raises(PreconditionFailed):
        refused.wait_ready(timeout=30)
    wait_until(lambda: refused.failures >= 3, timeout=30)  # it keeps trying, on channels of its own
    assert shared is not None and shared.is_open and first.channel is shared and first.generation == generation


def test_a_publish_refused_for_one_outbox_fails_only_its_message(make_link, amqp_url, service):
    links = [make_link(Queue(service, durable=True)) for _ in range(5)]
    outboxes = [Outbox(link) for link in links]
    outcomes: dict[bytes, AsyncResult] = {}

    def publish(outbox: Outbox, exchange: str, body: bytes) -> None:
        outcomes[body] = AsyncResult()
        outbox.publish(exchange, service, body, Properties(), on_done=outcomes[body].set)

    for round in range(300):  # all in flight at once: after the refusal, all are published one at a time
        publish(outboxes[0], "no-such-exchange" if round == 10 else "", b"0.%d" % round)
        for n, outbox in enumerate(outboxes[1:], 1):
            publish(outbox, "", b"%d.%d" % (n, round))
    assert all(outbox.flush(timeout=60) for outbox in outboxes)
    failed = {body for body, outcome in outcomes.items() if outcome.get() is not None}
    assert failed == {b"0.10"} and isinstance(outcomes[b"0.10"].get(), NotFound)
    wait_until(lambda: all(link.ready.is_set() and link.channel is links[0].channel for link in links))
    assert not any(link.alone for link in links)  # back on the shared channel once the refused one was found
    assert set(drain(amqp_url, service)) == set(outcomes) - failed


def test_reset_sets_one_link_up_again_and_leaves_the_shared_channel_to_the_others(make_link):
    first, second = make_link(), make_link()
    shared, generation = first.channel, second.generation
    set_up: list[int] = []
    first.on_ready(lambda channel: set_up.append(first.generation))
    before = first.generation
    first.reset()
    wait_until(lambda: first.ready.is_set() and first.generation > before)
    assert set_up == [first.generation]  # its hooks ran again
    assert shared is not None and shared.is_open and first.channel is second.channel is shared
    assert second.generation == generation


def test_a_lost_shared_channel_reaches_every_link_and_no_call_is_lost(make_client, make_server):
    server = make_server()
    server.add_function(lambda x: x * 2, "double")
    server.serve()
    clients = [make_client() for _ in range(4)]
    for client in clients:
        client.call(timeout=30).double(0)
    links = [side.transport.publisher for side in (server, *clients)]
    shared, generations = links[0].channel, [link.generation for link in links]
    assert shared is not None and all(link.channel is shared for link in links)

    def calls(client: AmqpRpcClient, first: int) -> list[int]:
        return [client.call(timeout=60).double(first + i) for i in range(50)]

    calling = [gevent.spawn(calls, client, n * 50) for n, client in enumerate(clients)]
    gevent.sleep(0)  # the first calls are in flight
    shared.basic_publish(b"", "no-such-exchange")  # the broker closes the channel under everyone
    gevent.joinall(calling, raise_error=True)
    assert [result for g in calling for result in g.value] == [2 * x for x in range(200)]
    assert not shared.is_open
    assert all(link.generation > before for link, before in zip(links, generations, strict=True))
    wait_until(lambda: all(link.ready.is_set() and link.channel is links[0].channel for link in links))


def consumers_prefetch(node: RabbitNode, queue: str) -> list[int]:
    listed = node.ctl("list_consumers", "-q", "--no-table-headers", "queue_name", "prefetch_count")
    return sorted(int(line.split()[1]) for line in listed.splitlines() if line.split()[0] == queue)


def test_consumers_of_links_sharing_a_channel_keep_their_own_prefetch(make_link, rabbit_node, service):
    links = [make_link(Queue(service), confirm=False, prefetch=n) for n in (1, 7, 1, 7)]
    assert all(link.channel is links[0].channel for link in links)
    starting = [gevent.spawn(link.add_consumer, service, lambda message: None) for link in links]
    gevent.joinall(starting, raise_error=True)  # qos and consume of each interleave with the others'
    assert consumers_prefetch(rabbit_node, service) == [1, 1, 7, 7]


def test_a_link_whose_consumer_is_refused_at_setup_reports_it_and_others_stay_up(make_link, service):
    first = make_link(Queue(service), confirm=False)
    first.add_consumer(service, lambda message: message.ack())
    shared, generation = first.channel, first.generation
    refused = Link(first._parameters, "refused", connections=first._connections)
    refused.add_consumer(f"{service}.missing", lambda message: None)
    refused.start()
    try:
        with pytest.raises(NotFound):
            refused.wait_ready(timeout=30)
        wait_until(lambda: refused.failures >= 3, timeout=30)  # it keeps trying, on channels of its own
    finally:
        refused.stop()
    assert shared is not None and shared.is_open and first.channel is shared and first.generation == generation


def test_a_consumer_refused_on_the_shared_channel_sends_its_link_on_alone(make_link, service):
    first, second = make_link(Queue(service), confirm=False), make_link(confirm=False)
    shared, generation = first.channel, first.generation
    with pytest.raises(NotFound):  # not checked first (a caller that can checks): it closes the channel, once
        second.add_consumer(f"{service}.missing", lambda message: None)
    wait_until(lambda: first.ready.is_set() and second.ready.is_set() and first.generation > generation)
    assert second.alone and second.channel is not first.channel and not shared.is_open
    moved, generation = first.channel, first.generation
    with pytest.raises(NotFound):  # again: on its own channel now
        second.add_consumer(f"{service}.missing", lambda message: None)
    assert moved is not None and moved.is_open and first.channel is moved and first.generation == generation


def test_a_stopped_server_hands_its_unacknowledged_requests_to_another_on_the_same_channel(make_client, make_server):
    release = Event()

    def wait_for_release(n: int) -> str:
        release.wait()
        return "stuck"

    stuck = make_server(concurrency=3, stop_timeout=0.5)
    stuck.add_function(wait_for_release, "which")
    stuck.serve()
    client = make_client()
    calls = [gevent.spawn(client.call(timeout=60).which, n) for n in range(3)]
    wait_until(lambda: len(stuck.transport.consumer.channel._acks.unacked) == 3)
    other = make_server()
    other.add_function(lambda n: f"other {n}", "which")
    other.serve()
    shared = other.transport.consumer.channel
    assert shared is stuck.transport.consumer.channel
    stuck.stop()  # its three requests, received and never acknowledged, go back to the queue
    gevent.joinall(calls, raise_error=True)
    assert sorted(g.value for g in calls) == ["other 0", "other 1", "other 2"]
    release.set()  # if the stuck handlers still run, their late acks must not close the shared channel
    assert client.call(timeout=30).which(3) == "other 3"
    assert shared.is_open and other.transport.consumer.channel is shared
