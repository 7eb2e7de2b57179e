"""PendingCalls: pending calls by request id, timed out by one timer (pure logic, no broker)."""

from __future__ import annotations

import gc
import time
import weakref

import pytest

from amphora.deadlines import Deadlines
from amphora.exceptions import NoResult
from amphora.pending import PendingCall, PendingCalls, PendingGather

pytestmark = pytest.mark.timeout(30)


def test_calls_time_out_in_deadline_order_across_timeouts():
    calls = PendingCalls()
    slow, fast, none = PendingCall("slow", 0.6), PendingCall("fast", 0.1), PendingCall("none", None)
    for request_id, call in (("slow", slow), ("fast", fast), ("none", none)):
        calls.add(request_id, call)
    start = time.monotonic()
    with pytest.raises(NoResult, match="fast"):
        fast.result.get(timeout=5)
    fast_after = time.monotonic() - start
    with pytest.raises(NoResult, match="slow"):
        slow.result.get(timeout=5)
    slow_after = time.monotonic() - start
    assert 0.1 <= fast_after < slow_after  # each after its own timeout and grace, the earlier first
    assert 0.6 <= slow_after < 3
    assert list(calls) == ["none"]  # a call without a timeout waits for ever
    assert not none.result.ready()


def test_a_settled_call_never_times_out_and_the_rest_still_do():
    calls = PendingCalls()
    first, second = PendingCall("first", 0.05), PendingCall("second", 0.05)
    calls.add("1", first)
    calls.add("2", second)
    assert calls.pop("1") is first
    first.settle("done")
    with pytest.raises(NoResult):
        second.result.get(timeout=5)
    assert first.result.get() == "done"
    assert len(calls) == 0 and calls.pop("1") is None


def test_a_gather_returns_what_came_by_its_timeout():
    calls = PendingCalls()
    gather = PendingGather("ping", 0.05, expect=None)
    calls.add("g", gather)
    gather.add_reply("server-a", 1, None)
    assert gather.result.get(timeout=5) == {"server-a": 1}
    assert "g" not in calls


def test_an_earlier_deadline_rearms_the_timer():
    calls = PendingCalls()
    late, early = PendingCall("late", 30), PendingCall("early", 0.05)
    calls.add("late", late)
    calls.add("early", early)  # added second, due first
    with pytest.raises(NoResult):
        early.result.get(timeout=5)
    assert list(calls) == ["late"]


def test_overlapping_calls_share_one_timer_that_keeps_no_hub_busy_and_goes_when_none_waits():
    calls = PendingCalls()
    calls.add("1", PendingCall("f", 30))
    timer = calls._timer
    calls.add("2", PendingCall("f", 30))  # due later than the armed timer: no new timer
    calls.pop("1")
    assert calls._timer is timer
    assert not timer.ref  # an idle client's timer does not keep gevent's hub running
    calls.pop("2")
    assert calls._timer is None and not timer.active  # else the hub keeps the calls, and their client, until it fires
    alive = weakref.ref(calls)
    del calls, timer
    gc.collect()
    assert alive() is None
    again = PendingCalls()
    again.add("3", PendingCall("f", 0.05))  # a new timer is armed for the next call
    with pytest.raises(NoResult):
        again.get("3").result.get(timeout=5)  # type: ignore[union-attr]


def test_a_timer_firing_with_nothing_due_leaves_the_later_calls_pending():
    calls = PendingCalls()
    calls.add("early", PendingCall("early", 0.05))
    calls.pop("early")
    late = PendingCall("late", 0.5)
    calls.add("late", late)  # the timer armed for "early" fires first, with nothing due
    with pytest.raises(NoResult, match="late"):
        late.result.get(timeout=5)
    assert len(calls) == 0


# --- Deadlines: the bookkeeping of when, with the time passed in -------------------------------------------


def test_keys_fall_due_by_deadline_across_lifetimes_and_the_next_wakeup_is_the_earliest_left():
    deadlines = Deadlines()
    assert deadlines.add("slow", 10.0, now=100.0) == 110.0  # nothing armed yet: arm for it
    assert deadlines.add("fast", 1.0, now=100.0) == 101.0  # earlier than the armed wake-up: re-arm
    assert deadlines.add("fast-2", 1.0, now=100.5) is None  # the armed wake-up comes first
    assert deadlines.expire(now=101.0) == (["fast"], 101.5)
    assert deadlines.expire(now=105.0) == (["fast-2"], 110.0)
    assert deadlines.expire(now=110.0) == (["slow"], None)
    assert deadlines.expire(now=200.0) == ([], None)


def test_a_removed_key_never_falls_due_and_its_wakeup_stays_armed_for_the_next():
    deadlines = Deadlines()
    assert deadlines.add("first", 5.0, now=0.0) == 5.0
    deadlines.remove("first", 5.0)
    assert deadlines.add("second", 5.0, now=1.0) is None  # the wake-up armed for "first" is shared
    assert deadlines.expire(now=5.0) == ([], 6.0)  # it fires with nothing due: re-arm for "second"
    assert deadlines.add("third", 5.0, now=5.5) is None
    deadlines.remove("second", 5.0)
    deadlines.remove("unknown", 7.0)  # a settled call removed twice, or never timed: nothing happens
    assert deadlines.expire(now=6.0) == ([], 10.5)
    assert deadlines.expire(now=10.5) == (["third"], None)
    assert deadlines.add("fourth", 1.0, now=11.0) == 12.0  # nothing armed any more: arm again


def test_keys_of_one_lifetime_fall_due_in_the_order_they_were_added():
    deadlines = Deadlines()
    for second in range(5):
        deadlines.add(f"call-{second}", 3.0, now=float(second))
    due, wakeup = deadlines.expire(now=5.0)
    assert due == ["call-0", "call-1", "call-2"] and wakeup == 6.0
