"""The answered-requests memory stays within its count and byte bounds (pure logic)."""

import pytest

from amphora.amqp import Properties
from amphora.answered import AnsweredRequests, Reply

pytestmark = pytest.mark.timeout(10)


def reply(size: int) -> Reply:
    return Reply(b"x" * size, Properties())


def test_oldest_replies_go_first_when_over_the_count():
    memory = AnsweredRequests(max_count=3, max_bytes=10**9)
    for request_id in "abcd":
        memory.remember(request_id, reply(1))
    assert "a" not in memory and all(request_id in memory for request_id in "bcd")


def test_large_replies_are_bounded_by_bytes_and_casts_cost_nothing():
    memory = AnsweredRequests(max_count=1000, max_bytes=100_000)
    for number in range(10):
        memory.remember(f"big{number}", reply(40_000))
    assert len(memory) == 2 and "big9" in memory and "big8" in memory
    for number in range(500):
        memory.remember(f"cast{number}", None)
    assert len(memory) == 502 and memory.get("cast0") is None


def test_remembering_again_replaces_without_double_counting():
    memory = AnsweredRequests(max_count=10, max_bytes=100)
    for _ in range(5):
        memory.remember("same", reply(60))
    memory.remember("other", reply(40))
    assert "same" in memory and "other" in memory
