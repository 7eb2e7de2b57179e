"""PendingCalls: pending calls by request id, timed out by one timer (pure logic, no broker)."""

from __future__ import annotations

import time

import pytest

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


def test_calls_one_after_the_other_share_one_timer_that_keeps_no_hub_busy():
    calls = PendingCalls()
    calls.add("1", PendingCall("f", 30))
    timer = calls._timer
    calls.pop("1")
    calls.add("2", PendingCall("f", 30))  # due later than the armed timer: no new timer
    calls.pop("2")
    assert calls._timer is timer
    assert not timer.ref  # an idle client's timer does not keep gevent's hub running


def test_a_timer_firing_with_nothing_due_leaves_the_later_calls_pending():
    calls = PendingCalls()
    calls.add("early", PendingCall("early", 0.05))
    calls.pop("early")
    late = PendingCall("late", 0.5)
    calls.add("late", late)  # the timer armed for "early" fires first, with nothing due
    with pytest.raises(NoResult, match="late"):
        late.result.get(timeout=5)
    assert len(calls) == 0
