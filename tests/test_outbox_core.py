"""OutboxState on its own (no broker, no greenlet): the window, the replay, and what each confirm decides.

The link's generation (a number per connection) is passed in; nothing in the state depends on the time.
"""

from __future__ import annotations

import pytest

from amphora.amqp import Properties
from amphora.amqp.errors import (
    ConnectionClosed,
    ConnectionLost,
    MessageNacked,
    MessageReturned,
    NotFound,
)
from amphora.outbox_state import QUIET_BODY_LIMIT, Envelope, OutboxState, Verdict

pytestmark = pytest.mark.timeout(10)


def make(state: OutboxState, body: bytes = b"x", quiet: bool = False) -> Envelope:
    return state.envelope("", "queue", body, Properties(), False, None, quiet)


def send_all(state: OutboxState, generation: int) -> list[Envelope]:
    """What the pump publishes on connection ``generation`` until the window is full."""
    sent = []
    while state.can_send(generation):
        envelope = state.next_unsent(generation)
        if envelope is not None:
            state.sending(envelope, generation)
            sent.append(envelope)
    return sent


def test_messages_go_out_at_once_until_the_window_is_full_then_wait_in_order():
    state = OutboxState(limit=100, window=2)
    first, second, third, fourth = (make(state) for _ in range(4))
    for envelope in (first, second):
        assert state.add(envelope, ready_generation=1)
        state.sending(envelope, 1)
    assert not state.add(third, ready_generation=1)  # the window is full
    assert not state.can_send(1)
    assert state.confirmed(first, 1, 1, None) is Verdict.FINISH and state.remove(first)
    assert not state.add(fourth, ready_generation=1)  # room now, but the third one waits before it
    assert send_all(state, 1) == [third]
    assert state.confirmed(second, 1, 1, None) is Verdict.FINISH and state.remove(second)
    assert send_all(state, 1) == [fourth]
    assert len(state) == 2 and state.in_flight == 2


def test_a_message_waits_while_the_link_is_down():
    state = OutboxState(limit=100, window=10)
    assert not state.add(make(state), ready_generation=None)
    assert list(state.unsent) == list(state.entries.values())


def test_a_reconnect_replays_every_held_message_in_order_and_ignores_the_old_connections_confirms():
    state = OutboxState(limit=100, window=2)
    envelopes = [make(state) for _ in range(4)]
    for envelope in envelopes:
        state.add(envelope, ready_generation=None)  # published before the link was first up
    assert send_all(state, 1) == envelopes[:2]
    assert state.replay() == 4  # the connection was lost: the two in flight go again, first
    assert state.in_flight == 0
    assert state.confirmed(envelopes[0], 1, 2, ConnectionLost("gone")) is Verdict.IGNORE
    assert state.in_flight == 0  # a confirm of the lost connection does not count
    assert send_all(state, 2) == envelopes[:2]
    assert state.confirmed(envelopes[0], 2, 2, None) is Verdict.FINISH and state.remove(envelopes[0])
    assert send_all(state, 2) == envelopes[2:3]


def test_the_queue_skips_messages_that_left_or_went_out_on_this_connection_already():
    state = OutboxState(limit=100, window=10)
    gone, sent, waiting = make(state), make(state), make(state)
    for envelope in (gone, sent, waiting):
        state.add(envelope, ready_generation=None)
    state.remove(gone)
    sent.generation = 3
    assert send_all(state, 3) == [waiting]
    assert not state.unsent


def test_a_nack_asks_for_one_reconnect_per_connection():
    state = OutboxState(limit=100, window=10)
    first, second, third = make(state), make(state), make(state)
    for envelope in (first, second):
        state.add(envelope, ready_generation=1)
        state.sending(envelope, 1)
    assert state.confirmed(first, 1, 1, MessageNacked()) is Verdict.RECONNECT
    assert state.confirmed(second, 1, 1, MessageNacked()) is Verdict.STAY  # that reconnect is due already
    assert len(state) == 2  # both stay for the replay
    state.replay()  # the link reconnected before the reconnect the nack asked for
    send_all(state, 2)
    state.nack_reconnect_over(1)
    assert state.confirmed(first, 2, 2, MessageNacked()) is Verdict.RECONNECT  # the new connection nacks too
    state.add(third, ready_generation=2)
    state.sending(third, 2)
    state.nack_reconnect_over(1)  # a late end of the old reconnect does not cancel the new one
    assert state.confirmed(third, 2, 2, MessageNacked()) is Verdict.STAY


def test_after_a_refusal_one_message_at_a_time_finds_the_refused_one_and_the_window_opens_again():
    state = OutboxState(limit=100, window=10)
    good, refused, after = make(state), make(state), make(state)
    for envelope in (good, refused, after):
        state.add(envelope, ready_generation=1)
        state.sending(envelope, 1)
    closed = NotFound(404, "NOT_FOUND - no exchange")
    assert all(state.confirmed(e, 1, 1, closed) is Verdict.STAY for e in (good, refused, after))
    assert state.window_for(1) == 10 and state.window_for(2) == 1  # careful from the next connection on
    state.replay()
    assert send_all(state, 2) == [good]
    assert state.confirmed(good, 2, 2, None) is Verdict.FINISH and state.remove(good)
    assert send_all(state, 2) == [refused]
    assert state.confirmed(refused, 2, 2, closed) is Verdict.REFUSED and state.remove(refused)
    state.replay()  # the broker closed the channel again: reconnected
    assert send_all(state, 3) == [after]
    assert state.window_for(3) == 1
    assert state.confirmed(after, 3, 3, None) is Verdict.FINISH  # the last one that shared the refusal
    assert state.window_for(3) == 10


def test_a_connection_closed_for_good_is_a_refusal_and_a_lost_one_is_not():
    state = OutboxState(limit=100, window=10)
    lost, framed = make(state), make(state)
    state.add(lost, ready_generation=1)
    state.sending(lost, 1)
    assert state.confirmed(lost, 1, 1, ConnectionLost("reset")) is Verdict.STAY
    assert state.confirmed(lost, 1, 1, ConnectionClosed(320, "shutdown")) is Verdict.STAY
    assert state.window_for(2) == 10  # reconnecting fixes those
    state.add(framed, ready_generation=1)
    state.sending(framed, 1)
    assert state.confirmed(framed, 1, 1, ConnectionClosed(501, "FRAME_ERROR")) is Verdict.STAY
    assert state.window_for(2) == 1


def test_a_returned_message_leaves_with_its_error():
    state = OutboxState(limit=100, window=10)
    envelope = make(state)
    state.add(envelope, ready_generation=1)
    state.sending(envelope, 1)
    assert state.confirmed(envelope, 1, 1, MessageReturned(312, "NO_ROUTE", None)) is Verdict.FINISH
    assert state.remove(envelope) and not state.remove(envelope)  # it leaves once


def test_the_outbox_is_full_at_its_limit():
    state = OutboxState(limit=2, window=10)
    first = make(state)
    for envelope in (first, make(state)):
        state.add(envelope, ready_generation=None)
    assert state.full
    state.remove(first)
    assert not state.full


def test_confirms_may_wait_while_few_small_quiet_messages_are_in_flight_and_nobody_flushes():
    assert OutboxState(limit=100, window=10).patience == 5  # by default half the window, or of the limit
    assert OutboxState(limit=6, window=1000).patience == 3
    state = OutboxState(limit=100, window=10, patience=2)
    assert not make(state, b"x" * (QUIET_BODY_LIMIT + 1), quiet=True).quiet  # too large to be read late
    quiet = [make(state, quiet=True) for _ in range(3)]
    state.add(quiet[0], ready_generation=1)
    state.sending(quiet[0], 1)
    assert state.confirms_may_wait()
    state.flushing += 1
    assert not state.confirms_may_wait()  # somebody waits for every confirm
    state.flushing -= 1
    for envelope in quiet[1:]:
        state.add(envelope, ready_generation=1)
        state.sending(envelope, 1)
    assert not state.confirms_may_wait()  # more than ``patience`` in flight
    state.confirmed(quiet[2], 1, 1, None)
    prompt = make(state)
    state.add(prompt, ready_generation=1)
    state.sending(prompt, 1)
    assert not state.confirms_may_wait()  # its caller waits for this confirm
    state.unsendable(prompt)  # it could not be encoded: not in flight after all
    assert state.confirms_may_wait()
