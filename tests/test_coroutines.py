"""amphora.coroutines without a broker: a greenlet waits for a coroutine run on another thread's loop."""

from __future__ import annotations

import asyncio
import threading

import gevent
import pytest

from amphora import coroutines

pytestmark = pytest.mark.timeout(30)


async def add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


async def fail() -> None:
    raise KeyError("k")


def test_results_and_exceptions_reach_greenlets_of_a_hub_with_nothing_else_to_do():
    """The waiting keeps the hub's loop alive (else gevent would raise LoopExit: no watcher left)."""
    outcome: list[object] = []

    def in_fresh_thread() -> None:  # a new hub, without sockets or timers
        greenlets = [gevent.spawn(coroutines.run, add, [i, i], {}, None) for i in range(50)]
        outcome.append([g.get() for g in greenlets])
        with pytest.raises(KeyError):
            coroutines.run(fail, [], {}, None)
        outcome.append("raised")

    thread = threading.Thread(target=in_fresh_thread)
    thread.start()
    thread.join(20)
    assert outcome == [[2 * i for i in range(50)], "raised"]


def test_an_interrupted_wait_cancels_the_task():
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(gevent.Timeout), gevent.Timeout(0.2):
        coroutines.run(forever, [], {}, None)
    assert gevent.get_hub().threadpool.apply(cancelled.wait, (10,))
