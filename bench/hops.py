"""What crossing threads costs, without a broker: ``python -m bench.hops [--calls N] [--runs N]``.

A *hop* posts a callable to amphora's HubThread, which settles the caller's result right back: the two
thread crossings every call from a foreign thread or from asyncio makes. Measured from a plain thread
(a ThreadResult on an OS lock), from asyncio's own loop and from uvloop's (if installed):

- ``round trip``: one hop at a time, p50 and the process's CPU time per hop;
- ``100 in flight``: hops per second with 100 outstanding, with the inboxes' batched wake-ups and with one
  wake-up per post (what batching buys).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from time import perf_counter, process_time
from typing import Any

from amphora.hub_thread import AsyncioInbox, Batch, HubThread
from amphora.threaded import ThreadResult
from bench.common import render

IN_FLIGHT = 100


def _wake_per_post(self: Batch, fn: Callable[..., Any], *args: Any) -> None:
    self._items.append((fn, args))
    self._armed = True
    self._wake()


@contextmanager
def per_post_wake_ups(enabled: bool) -> Iterator[None]:
    """With ``enabled``, every post wakes its inbox (no batching) for the duration."""
    batched = Batch.post
    if enabled:
        Batch.post = _wake_per_post  # type: ignore[method-assign]
    try:
        yield
    finally:
        Batch.post = batched  # type: ignore[method-assign]


def thread_round_trip(hub: HubThread, calls: int) -> dict[str, float]:
    latencies, cpu_since = [], process_time()
    for i in range(calls):
        result, started = ThreadResult(), perf_counter()
        hub.post(result.settle, i, None)
        result.get()
        latencies.append(perf_counter() - started)
    return {"p50 us": statistics.median(latencies) * 1e6, "cpu us/hop": (process_time() - cpu_since) / calls * 1e6}


async def asyncio_round_trip(hub: HubThread, calls: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    inbox = AsyncioInbox.of(loop)
    latencies, cpu_since = [], process_time()
    for i in range(calls):
        future, started = loop.create_future(), perf_counter()
        hub.post(inbox.settle, future, i, None)
        await future
        latencies.append(perf_counter() - started)
    return {"p50 us": statistics.median(latencies) * 1e6, "cpu us/hop": (process_time() - cpu_since) / calls * 1e6}


def thread_in_flight(hub: HubThread, calls: int) -> float:
    window: collections.deque[ThreadResult] = collections.deque()
    started = perf_counter()
    for i in range(calls):
        if len(window) == IN_FLIGHT:
            window.popleft().get()
        result = ThreadResult()
        hub.post(result.settle, i, None)
        window.append(result)
    for result in window:
        result.get()
    return calls / (perf_counter() - started)


async def asyncio_in_flight(hub: HubThread, calls: int) -> float:
    loop = asyncio.get_running_loop()
    inbox = AsyncioInbox.of(loop)
    slots, done = asyncio.Semaphore(IN_FLIGHT), loop.create_future()
    settled = 0

    def on_settled(_: asyncio.Future[Any]) -> None:
        nonlocal settled
        settled += 1
        if settled == calls:
            done.set_result(None)
        slots.release()

    started = perf_counter()
    for i in range(calls):
        await slots.acquire()
        future = loop.create_future()
        future.add_done_callback(on_settled)
        hub.post(inbox.settle, future, i, None)
    await done
    return calls / (perf_counter() - started)


def loop_runners() -> dict[str, Callable[[Coroutine[Any, Any, Any]], Any]]:
    runners: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"asyncio": asyncio.run}
    try:
        import uvloop
    except ImportError:
        return runners
    runners["uvloop"] = uvloop.run
    return runners


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="hops per measurement (default 20,000)")
    parser.add_argument("--runs", type=int, default=5, help="runs; the medians are shown (default 5)")
    args = parser.parse_args(argv)
    hub = HubThread.shared()
    runners = loop_runners()
    found: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(args.runs):
        for name, metrics in [("thread", thread_round_trip(hub, args.calls // 4))] + [
            (loop, run(asyncio_round_trip(hub, args.calls // 4))) for loop, run in runners.items()
        ]:
            for metric, value in metrics.items():
                found[f"{name} round trip {metric}"].append(value)
        for per_post in (False, True):
            how = "one wake-up per post" if per_post else "batched"
            with per_post_wake_ups(per_post):
                found[f"thread 100 in flight, {how}: hops/s"].append(thread_in_flight(hub, args.calls))
                for loop, run in runners.items():
                    found[f"{loop} 100 in flight, {how}: hops/s"].append(run(asyncio_in_flight(hub, args.calls)))
    rows = [[name, f"{statistics.median(values):,.1f}"] for name, values in found.items()]
    print(render(["measure", "median"], rows, left=1))


if __name__ == "__main__":
    main()
