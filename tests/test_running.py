"""RunningRequests on its own (no broker): which deliveries of a request the server holds, and hands back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from amphora.running import RunningRequests

pytestmark = pytest.mark.timeout(10)


def delivery(name: str, open_channel: bool = True) -> Any:
    """A stand-in for a Message: the server's bookkeeping only asks whether its channel is open."""
    return SimpleNamespace(name=name, channel=SimpleNamespace(is_open=open_channel))


def test_copies_that_arrive_while_a_request_runs_join_it_and_all_are_taken_for_the_reply():
    running = RunningRequests()
    first, again, third = delivery("first"), delivery("again"), delivery("third")
    assert not running.join("r1", first)  # not running: the server starts it
    running.start("r1", first)
    assert running.join("r1", again) and running.join("r1", third)
    assert len(running) == 1 and running.held("r1") == 3
    assert running.take_all("r1", first) == [first, again, third]
    assert not running.join("r1", delivery("late"))  # over: a later copy is answered from memory instead
    assert len(running) == 0 and running.held("r1") == 0


def test_a_request_not_running_or_without_an_id_hands_back_only_its_own_delivery():
    running = RunningRequests()
    alone = delivery("alone")
    running.start("other", delivery("other"))
    assert running.take_all("r1", alone) == [alone]
    assert running.take_all(None, alone) == [alone]
    assert running.take_all("", alone) == [alone]


def test_copies_whose_channel_closed_are_dropped_and_the_first_open_one_handles_the_request():
    running = RunningRequests()
    lost, kept, later = delivery("lost", open_channel=False), delivery("kept"), delivery("later")
    running.start("r1", lost)
    running.join("r1", kept)
    running.join("r1", later)
    assert running.first_open("r1") is kept
    assert running.take_all("r1", kept) == [kept, later]  # the closed one is gone for good


def test_a_request_with_no_open_copy_left_is_forgotten():
    running = RunningRequests()
    lost = delivery("lost", open_channel=False)
    running.start("r1", lost)
    assert running.first_open("r1") is None
    assert not running.join("r1", delivery("new"))  # a new copy starts the request again
    assert running.first_open(None) is None and running.first_open("never") is None


def test_a_request_taken_whole_lets_its_next_copy_start_it_again():
    running = RunningRequests()
    first = delivery("first")
    running.start("r1", first)
    assert running.take_all("r1", first) == [first]
    assert running.take_all("r1", first) == [first]  # twice, or unknown: the delivery handled, alone
    assert not running.join("r1", delivery("again"))
