"""Many greenlets publishing large messages on one channel through a tiny socket buffer: nothing corrupts."""

from __future__ import annotations

import math
import random
import socket
import uuid

import gevent
import pytest
from gevent.event import Event

from amphora.amqp import Properties, connect

PUBLISHERS = 50
MESSAGES_EACH = 1000
MAX_SIZE = 200 * 1024


def message_size(rng: random.Random) -> int:
    """Sizes spread evenly over orders of magnitude, from 0 bytes to 200 KB (mean about 17 KB)."""
    return int(math.exp(rng.uniform(0, math.log(MAX_SIZE + 1)))) - 1


def make_body(publisher: int, number: int, size: int) -> bytes:
    """A body whose every byte can be checked: a label, then a fill byte that depends on the label."""
    label = b"%d:%d:%d|" % (publisher, number, size)
    return (label + bytes([(publisher * 7 + number) % 251]) * size)[: max(size, len(label))]


@pytest.mark.timeout(240)
def test_fifty_greenlets_publish_a_thousand_messages_each_on_one_channel(amqp_url):
    publish_and_check(amqp_url, MESSAGES_EACH)


@pytest.mark.timeout(120)
def test_frames_interrupted_mid_write_by_a_tiny_send_buffer_stay_whole(amqp_url):
    # A 4 KB send buffer makes the kernel take every message in pieces, so a greenlet switch can happen
    # mid-message. It is slow (the broker's delayed ACKs pace each 4 KB), hence fewer messages.
    publish_and_check(amqp_url, 20, send_buffer=4096)


def publish_and_check(amqp_url: str, messages_each: int, send_buffer: int | None = None) -> None:
    """PUBLISHERS greenlets publish with confirms on one channel while another connection consumes."""
    publishing = connect(amqp_url)
    if send_buffer:
        publishing._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    consuming = connect(amqp_url)
    queue = f"stress-{uuid.uuid4().hex}"
    consumer_channel = consuming.channel()
    consumer_channel.queue_declare(queue, auto_delete=True)
    expected: dict[bytes, bytes] = {}
    received: set[bytes] = set()
    corrupted: list[bytes] = []
    all_received = Event()
    total = PUBLISHERS * messages_each

    def on_message(message):
        label = message.body.split(b"|", 1)[0]
        if expected.get(label) != message.body or message.properties.message_id != label.decode():
            corrupted.append(label)
        received.add(label)
        if len(received) == total:
            all_received.set()

    consumer_channel.basic_consume(queue, on_message, no_ack=True)
    channel = publishing.channel()
    channel.confirm_select()

    def publish_all(publisher: int) -> int:
        rng = random.Random(publisher)
        confirmations = []
        for number in range(messages_each):
            body = make_body(publisher, number, message_size(rng))
            label = body.split(b"|", 1)[0]
            expected[label] = body
            confirmations.append(channel.basic_publish(body, "", queue, Properties(message_id=label.decode())))
            if number % 50 == 0:
                gevent.sleep(0)  # let the other publishers interleave their messages with ours
        for confirmation in confirmations:
            confirmation.wait(timeout=120)
        return len(confirmations)

    publishers = [gevent.spawn(publish_all, p) for p in range(PUBLISHERS)]
    gevent.joinall(publishers, raise_error=True)
    assert sum(p.value for p in publishers) == total  # every confirm arrived, none nacked
    assert all_received.wait(timeout=120), f"received {len(received)} of {total}"
    assert corrupted == []
    publishing.close()
    consuming.close()
