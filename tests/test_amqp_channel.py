"""Channels against a real broker: synchronous methods, typed errors, publishing, confirms, consumers."""

from __future__ import annotations

import time
import uuid

import gevent
import pytest
from gevent.queue import Queue

from amphora.amqp import Properties, connect
from amphora.amqp.acks import ACK_DELAY
from amphora.amqp.errors import (
    AccessRefused,
    ChannelClosed,
    MessageNacked,
    MessageReturned,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """The channel contract (amphora/amqp/API.md) holds on the RabbitMQ node and on the in-process broker."""
    return any_broker_url


@pytest.fixture
def channel(connection):
    return connection.channel()


@pytest.fixture
def queue(channel):
    name = f"test-{uuid.uuid4().hex}"
    channel.queue_declare(name, auto_delete=False)
    yield name
    if channel.is_open:
        channel.queue_delete(name)


@pytest.fixture
def publisher(connection):
    """A channel with publisher confirms on."""
    channel = connection.channel()
    channel.confirm_select()
    return channel


def consume_into(channel, queue, no_ack=True) -> Queue:
    received: Queue = Queue()
    channel.basic_consume(queue, received.put, no_ack=no_ack)
    return received


@pytest.mark.rabbitmq_only("the memory broker reports itself, not RabbitMQ")
def test_negotiates_limits_and_reports_the_broker(connection):
    assert connection.server_properties["product"] == "RabbitMQ"
    assert connection.frame_max == 131072
    assert connection.heartbeat == 30
    assert connection.is_open


def test_declare_bind_publish_consume_and_delete(channel, queue):
    exchange = f"ex-{uuid.uuid4().hex}"
    channel.exchange_declare(exchange, "direct")
    channel.queue_bind(queue, exchange, "key")
    received = consume_into(channel, queue)
    channel.basic_publish(b"hello", exchange, "key", Properties(content_type="text/plain", message_id="42"))
    message = received.get(timeout=5)
    assert (message.body, message.routing_key, message.exchange) == (b"hello", "key", exchange)
    assert message.properties.message_id == "42" and message.properties.content_type == "text/plain"
    channel.queue_unbind(queue, exchange, "key")
    channel.exchange_delete(exchange)


def test_purge_and_delete_report_message_counts(channel, queue):
    channel.confirm_select()
    for _ in range(3):
        channel.basic_publish(b"x", "", queue).wait()
    assert channel.queue_declare(queue, passive=True).message_count == 3
    assert channel.queue_purge(queue) == 3
    channel.basic_publish(b"x", "", queue).wait()
    assert channel.queue_delete(queue) == 1


def test_missing_queue_is_not_found_and_closes_only_that_channel(connection, channel):
    other = connection.channel()
    with pytest.raises(NotFound, match="no queue"):
        channel.queue_declare(f"missing-{uuid.uuid4().hex}", passive=True)
    assert not channel.is_open
    with pytest.raises(NotFound):
        channel.queue_declare("anything")  # the closed channel says why it closed
    assert other.is_open and connection.is_open
    other.queue_declare("", exclusive=True)  # the connection still works


def test_redeclare_with_other_arguments_is_precondition_failed(connection, queue):
    with pytest.raises(PreconditionFailed):
        connection.channel().queue_declare(queue, durable=True)


def test_exclusive_queue_of_another_connection_is_locked(amqp_url, connection):
    owner = connect(amqp_url)
    try:
        name = owner.channel().queue_declare("", exclusive=True).queue
        with pytest.raises(ResourceLocked):
            connection.channel().queue_declare(name, passive=True)
    finally:
        owner.close()


def test_reserved_names_are_access_refused(channel):
    with pytest.raises(AccessRefused):
        channel.exchange_declare("amq.mine", "direct")


def test_channel_error_fails_the_waiting_call_only(connection):
    channels = [connection.channel() for _ in range(3)]
    bad = gevent.spawn(channels[0].exchange_declare, f"missing-{uuid.uuid4().hex}", passive=True)
    good = [gevent.spawn(ch.queue_declare, "", exclusive=True) for ch in channels[1:]]
    gevent.joinall([bad, *good], timeout=10)
    assert isinstance(bad.exception, NotFound)
    assert all(g.successful() for g in good)


def test_ten_megabyte_body_round_trip(channel, queue):
    body = bytes(range(256)) * (10 * 1024 * 1024 // 256) + b"tail"
    received = consume_into(channel, queue)
    channel.confirm_select()
    channel.basic_publish(body, "", queue).wait(timeout=30)
    assert received.get(timeout=30).body == body


def test_bodies_at_frame_boundaries(connection, channel, queue):
    chunk = connection.frame_max - 8
    sizes = [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 2 * chunk + 1]
    received = consume_into(channel, queue)
    channel.confirm_select()
    for size in sizes:
        channel.basic_publish(bytes([size % 251]) * size, "", queue).wait()
    assert [received.get(timeout=5).body for _ in sizes] == [bytes([s % 251]) * s for s in sizes]


def test_confirm_wait_and_callbacks(channel, queue):
    channel.confirm_select()
    settled = []
    confirmations = [channel.basic_publish(b"%d" % i, "", queue) for i in range(500)]
    for confirmation in confirmations:
        confirmation.add_done_callback(settled.append)
    confirmations[-1].wait(timeout=10)
    for confirmation in confirmations:
        confirmation.wait(timeout=10)
    assert len(settled) == 500 and all(c.exception is None for c in settled)
    assert channel.queue_declare(queue, passive=True).message_count == 500


def test_nacked_publish_is_reported(channel):
    name = f"full-{uuid.uuid4().hex}"
    channel.queue_declare(name, auto_delete=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.confirm_select()
    channel.basic_publish(b"first", "", name).wait(timeout=5)
    with pytest.raises(MessageNacked):
        channel.basic_publish(b"second", "", name).wait(timeout=5)
    channel.queue_delete(name)


def test_unroutable_mandatory_publish_is_returned_to_its_publisher(channel, queue):
    channel.confirm_select()
    routed = channel.basic_publish(b"a", "", queue, mandatory=True)
    lost = channel.basic_publish(b"b", "", f"nowhere-{uuid.uuid4().hex}", mandatory=True)
    after = channel.basic_publish(b"c", "", queue, mandatory=True)
    routed.wait(timeout=5)
    after.wait(timeout=5)
    with pytest.raises(MessageReturned) as info:
        lost.wait(timeout=5)
    assert info.value.reply_code == 312 and info.value.message.body == b"b"


@pytest.mark.rabbitmq_only("looks into the network channel's return bookkeeping")
def test_returns_find_their_publish_among_many_in_flight(channel, queue):
    """Returns are matched by message_id, else correlation_id, else (neither, or one already in flight) by a
    header: every publish gets its own outcome, whatever ids the others carry."""
    channel.confirm_select()
    nowhere = f"nowhere-{uuid.uuid4().hex}"
    publishes = [  # (routing key, properties)
        (queue, Properties(message_id="m1", correlation_id="c1")),
        (nowhere, Properties(message_id="m2", correlation_id="c1")),
        (nowhere, Properties(correlation_id="c1")),  # c1 is no one's key yet: the first with it as key
        (queue, Properties(correlation_id="c1")),  # c1 is in use: the header
        (nowhere, Properties(correlation_id="c1")),  # again
        (nowhere, Properties(message_id="m2")),  # m2 is in use: the header
        (queue, Properties(message_id="c1")),  # one namespace: c1 is in use
        (nowhere, None),  # no ids: the header
        (queue, None),
        (nowhere, Properties(message_id="m3", headers={"x-amphora-publish-seq": 1})),  # a stale header: replaced
    ]
    confirmations = [
        channel.basic_publish(b"%d" % i, "", key, properties, mandatory=True)
        for i, (key, properties) in enumerate(publishes)
    ]
    for i, ((key, _), confirmation) in enumerate(zip(publishes, confirmations, strict=True)):
        if key == queue:
            confirmation.wait(timeout=5)
            continue
        with pytest.raises(MessageReturned) as info:
            confirmation.wait(timeout=5)
        assert info.value.message.body == b"%d" % i
    assert channel._return_seqs == {} and channel._return_keys == {}
    assert channel.queue_declare(queue, passive=True).message_count == 4


def test_a_return_matched_by_its_id_carries_no_added_header(channel):
    channel.confirm_select()
    properties = Properties(message_id="mine", headers={"a": 1})
    with pytest.raises(MessageReturned) as info:
        channel.basic_publish(b"x", "", f"nowhere-{uuid.uuid4().hex}", properties, mandatory=True).wait(timeout=5)
    assert info.value.message.properties.headers == {"a": 1}


def test_returns_without_confirms_reach_the_return_callback(channel):
    returned: Queue = Queue()
    channel.add_return_callback(lambda message, error: returned.put((message.body, error.reply_code)))
    channel.basic_publish(b"lost", "", f"nowhere-{uuid.uuid4().hex}", mandatory=True)
    assert returned.get(timeout=5) == (b"lost", 312)


def test_manual_ack_nack_reject_and_multiple(connection, queue, publisher):
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=10)
    received = consume_into(consumer, queue, no_ack=False)
    for i in range(4):
        publisher.basic_publish(b"%d" % i, "", queue).wait()
    first = [received.get(timeout=5) for _ in range(4)]
    first[1].ack(multiple=True)  # acks 0 and 1
    first[2].reject(requeue=False)  # dropped
    first[3].nack(requeue=True)  # comes back, redelivered
    again = received.get(timeout=5)
    assert again.body == b"3" and again.redelivered
    again.ack()
    gevent.sleep(0)  # let the writer flush the ack before we count
    checker = connection.channel()
    for _ in range(50):  # the broker applies acks asynchronously: poll until it has
        if checker.queue_declare(queue, passive=True).message_count == 0:
            break
        gevent.sleep(0.05)
    consumer.close()
    assert checker.queue_declare(queue, passive=True).message_count == 0


@pytest.mark.rabbitmq_only("acks are gathered into frames by the network channel only")
def test_acks_in_any_order_are_gathered_and_all_arrive(connection, queue, publisher):
    consumer = connection.channel()
    received = consume_into(consumer, queue, no_ack=False)
    for i in range(60):
        publisher.basic_publish(b"%d" % i, "", queue)
    publisher.basic_publish(b"last", "", queue).wait()
    messages = [received.get(timeout=5) for _ in range(61)]
    sent_frames = []
    real_send = consumer._acks._send
    consumer._acks._send = lambda data: sent_frames.append(data) or real_send(data)
    for batch in (messages[10:20], messages[:10], messages[40:0:-3], messages):  # gaps, runs, repeats
        for message in batch:
            if message.delivery_tag not in consumer._acks.unacked:
                continue  # already acknowledged
            message.ack()
        gevent.sleep(0)  # one loop iteration: the gathered acks go out together
    assert len(sent_frames) <= 6  # a handful of frames for 61 acks
    consumer.close()  # unacknowledged deliveries would go back to the queue now
    checker = connection.channel()
    assert checker.queue_declare(queue, passive=True).message_count == 0


@pytest.mark.rabbitmq_only("acks are gathered into frames by the network channel only")
def test_acks_wait_for_half_a_prefetch_or_the_delay_and_never_stall_deliveries(connection, queue, publisher):
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=10)
    sent_frames = []
    real_send = consumer._acks._send
    consumer._acks._send = lambda data: sent_frames.append(data) or real_send(data)
    acked = Queue()

    def ack_each(message) -> None:
        message.ack()
        acked.put(message.body)

    consumer.basic_consume(queue, ack_each)
    for i in range(200):
        publisher.basic_publish(b"%d" % i, "", queue)
    publisher.basic_publish(b"last", "", queue).wait()
    # with 10 in flight at most, 201 deliveries arrive only if acks went out every 5 (half the prefetch)
    assert [acked.get(timeout=5) for _ in range(201)][-1] == b"last"
    assert len(sent_frames) <= 201 // 5 + 2
    consumer.basic_qos(prefetch_count=1)  # a second consumer with prefetch 1: each ack goes out at once
    publisher.basic_publish(b"one more", "", queue).wait()
    assert acked.get(timeout=5) == b"one more"
    gevent.sleep(0)  # the ack went at the end of that loop iteration, not ACK_DELAY later
    gevent.sleep(0)
    assert not consumer._acks.gathered
    checker = connection.channel()
    assert checker.queue_declare(queue, passive=True).message_count == 0
    consumer.close()
    assert checker.queue_declare(queue, passive=True).message_count == 0  # none was left unacknowledged


@pytest.mark.rabbitmq_only("acks are gathered into frames by the network channel only")
def test_a_lone_ack_goes_out_after_the_delay(connection, queue, publisher):
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=100)
    received = consume_into(consumer, queue, no_ack=False)
    publisher.basic_publish(b"alone", "", queue).wait()
    message = received.get(timeout=5)
    message.ack()
    assert consumer._acks.gathered  # held back: 1 of the 50 that would go at once
    held_at = time.monotonic()
    wait_until(lambda: not consumer._acks.gathered, timeout=5, interval=0.001)
    assert time.monotonic() - held_at >= ACK_DELAY / 2  # sent by the delay, not at once
    assert message.delivery_tag not in consumer._acks.unacked


def test_unacked_messages_are_redelivered_when_the_channel_closes(connection, queue, publisher):
    publisher.basic_publish(b"keep me", "", queue).wait()
    consumer = connection.channel()
    received = consume_into(consumer, queue, no_ack=False)
    assert received.get(timeout=5).body == b"keep me"
    consumer.close()
    again = consume_into(connection.channel(), queue, no_ack=False).get(timeout=5)
    assert again.body == b"keep me" and again.redelivered


def test_server_cancel_is_reported_when_the_queue_is_deleted(connection, channel, queue):
    cancelled: Queue = Queue()
    tag = channel.basic_consume(queue, lambda m: None, on_cancel=cancelled.put)
    connection.channel().queue_delete(queue)
    assert cancelled.get(timeout=5) == tag
    channel.queue_declare(queue)  # the channel survives; recreate so the fixture can delete it


def test_cancelled_consumer_gets_nothing_more(channel, queue):
    received: Queue = Queue()
    tag = channel.basic_consume(queue, received.put, no_ack=True)
    channel.basic_cancel(tag)
    channel.confirm_select()
    channel.basic_publish(b"x", "", queue).wait()
    assert channel.queue_declare(queue, passive=True).message_count == 1
    assert received.empty()


def test_closed_channel_refuses_work_with_a_clear_error(connection):
    channel = connection.channel()
    channel.close()
    with pytest.raises(ChannelClosed, match="closed by the client"):
        channel.basic_publish(b"x", "", "q")
    channel.close()  # closing twice is harmless


def test_a_close_cut_short_keeps_its_channel_number_until_the_broker_answers(connection):
    for _ in range(20):  # each time: the Close is sent, then the wait for CloseOk is interrupted at once
        channel = connection.channel()
        with gevent.Timeout(0, False):
            channel.close()
        assert not channel.is_open
        connection.channel().queue_declare("", exclusive=True)  # a reused number would end the connection
    assert connection.is_open
    wait_until(lambda: len(connection._channels) == 20)  # the closed ones' numbers came back
