"""AckGatherer on its own (pure logic, no broker): which ack frames go out, and when."""

from __future__ import annotations

import gevent
import pytest

from amphora.amqp.acks import ACK_DELAY, AckGatherer
from amphora.amqp.frames import ack_frame
from helpers import wait_until

pytestmark = pytest.mark.timeout(10)

CHANNEL = 3


@pytest.fixture
def sent() -> list[bytes]:
    return []


@pytest.fixture
def gatherer(sent: list[bytes]) -> AckGatherer:
    acks = AckGatherer(CHANNEL, sent.append)
    for tag in range(1, 7):
        acks.delivered(tag)
    return acks


def test_a_batch_of_acks_in_order_goes_out_as_one_multiple_ack_at_the_end_of_the_loop_iteration(gatherer, sent):
    gatherer.set_prefetch(8, shared=False)  # a batch is 4
    for tag in (1, 2, 3):
        gatherer.ack(tag)
    gevent.sleep(0)
    assert sent == []  # 3 of 4: held back
    gatherer.ack(4)
    assert sent == []  # not inside the caller's step
    gevent.sleep(0)
    assert sent == [ack_frame(CHANNEL, 4, True)]
    assert list(gatherer.unacked) == [5, 6]


def test_acks_behind_an_unacknowledged_delivery_go_out_singly_and_a_later_run_as_multiple(gatherer, sent):
    for tag in (5, 3, 2):
        gatherer.ack(tag)
    gatherer.flush()
    assert sent == [ack_frame(CHANNEL, 2, False) + ack_frame(CHANNEL, 3, False) + ack_frame(CHANNEL, 5, False)]
    gatherer.ack(1)
    gatherer.ack(4)
    gatherer.flush()
    assert sent[1] == ack_frame(CHANNEL, 4, True)  # 1 and 4 with 2 and 3 already acknowledged
    assert list(gatherer.unacked) == [6]


def test_a_lone_ack_waits_for_the_delay(gatherer, sent):
    gatherer.set_prefetch(100, shared=False)
    gatherer.ack(1)
    gevent.sleep(ACK_DELAY / 2)
    assert sent == []  # not before the delay
    wait_until(lambda: sent, timeout=5, interval=0.001)
    assert sent == [ack_frame(CHANNEL, 1, True)]


def test_the_smallest_prefetch_of_a_shared_channel_decides(gatherer, sent):
    gatherer.set_prefetch(100, shared=False)
    gatherer.set_prefetch(2, shared=True)  # a batch of 1
    gatherer.set_prefetch(50, shared=True)
    gatherer.ack(1)
    gevent.sleep(0)
    assert sent == [ack_frame(CHANNEL, 1, True)]


def test_a_settle_sends_the_gathered_acks_first_and_forgets_the_settled_tags(gatherer, sent):
    gatherer.set_prefetch(100, shared=False)
    gatherer.ack(1)
    gatherer.settled(2, multiple=False)
    assert sent == [ack_frame(CHANNEL, 1, True)]
    assert list(gatherer.unacked) == [3, 4, 5, 6]
    gatherer.settled(5, multiple=True)
    assert list(gatherer.unacked) == [6]


def test_a_multiple_ack_goes_out_at_once_after_the_gathered_ones(gatherer, sent):
    gatherer.set_prefetch(100, shared=False)
    gatherer.ack(5)
    gatherer.ack(4, multiple=True)
    assert sent == [ack_frame(CHANNEL, 5, False), ack_frame(CHANNEL, 4, True)]
    assert list(gatherer.unacked) == [6]


def test_after_discard_nothing_is_sent(gatherer, sent):
    gatherer.set_prefetch(100, shared=False)
    gatherer.ack(1)
    gatherer.discard()
    gevent.sleep(ACK_DELAY * 2)
    gatherer.flush()
    assert sent == []
    assert not gatherer.unacked


def test_the_leftovers_of_consumers_by_tag_prefix_and_settles_of_them_dropped_once_handed_back(sent):
    acks = AckGatherer(CHANNEL, sent.append)
    for tag, consumer in ((1, "link1.1"), (2, "link2.1"), (3, "link1.2"), (4, "link1.1")):
        acks.delivered(tag, consumer)
    acks.ack(4)
    assert acks.leftovers("link1.") == [1, 3]  # the gathered ack of 4 went out first
    assert sent == [ack_frame(CHANNEL, 4, False)]
    for tag in (1, 3):
        assert acks.settled(tag, multiple=False)  # handed back (rejected) by the channel
    acks.ack(1)  # their owner, late: nothing goes out for them
    assert not acks.settled(3, multiple=False)
    acks.flush()
    assert sent == [ack_frame(CHANNEL, 4, False)] and list(acks.unacked) == [2]
