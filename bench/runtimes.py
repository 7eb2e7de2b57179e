"""``bench.rpc --clients aio,thread``: W1-W3 run by the asyncio client and by a gevent client called from
another OS thread, next to the gevent client itself (issue 20's speed targets).

``aio``: :class:`amphora.aio.AmqpRpcClient` on an asyncio event loop (uvloop's if installed) in a thread of
its own. ``thread``: an :class:`amphora.AmqpRpcClient` made in the benchmark's (gevent) main thread, called
from another OS thread, so every call goes through its twin in the HubThread. Each workload is the gevent
one's: W1 one call at a time, W2/W3 at most ``in_flight`` outstanding (``defer``). The thread client has no
callbacks: its window waits for the oldest outstanding call before it makes the next.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import statistics
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter, process_time
from typing import Any

from amphora import AmqpRpcClient, aio
from amphora.hub_thread import gevent_wait

CLIENTS = ("aio", "thread")
"""The runtimes this module adds; a column ``MODE-CLIENT`` for each, beside the gevent client's ``MODE``."""
TARGETS: dict[tuple[str, str, str], tuple[str, float]] = {
    ("aio", "W2", "calls/s"): (">=", 0.8),
    ("aio", "W1", "p50 us"): ("<=", 1.15),
    ("thread", "W1", "p50 us"): ("<=", 1.2),
}
"""(client, workload, metric) -> the ratio MODE-CLIENT / MODE (the gevent client) it should meet."""
DEADLINE = 600.0


def column(mode: str, client: str) -> str:
    return f"{mode}-{client}"


def split_column(name: str) -> tuple[str, str | None]:
    """``"transient-aio"`` -> ``("transient", "aio")``; a gevent column -> ``(mode, None)``."""
    mode, _, client = name.partition("-")
    return (mode, client) if client in CLIENTS else (name, None)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An asyncio event loop running in a thread of its own; :meth:`run` waits (in gevent) for a coroutine."""

    def __init__(self) -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-asyncio", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return gevent_wait(asyncio.run_coroutine_threadsafe(coroutine, self.loop), DEADLINE)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Runner:
    """Runs the workloads of one client column: ``sequential`` (W1) and ``pipelined`` (W2, W3)."""

    def __init__(self, kind: str, client: Any, loop: LoopThread | None, thread: ThreadPoolExecutor) -> None:
        self.kind, self.client, self._loop, self._thread = kind, client, loop, thread

    def sequential(self, calls: int, warmup: int) -> dict[str, float]:
        if self.kind == "aio":
            assert self._loop is not None
            return self._loop.run(_aio_sequential(self.client, calls, warmup))
        return gevent_wait(self._thread.submit(_thread_sequential, self.client, calls, warmup), DEADLINE)

    def pipelined(
        self,
        function: str,
        args: Callable[[int], tuple[Any, ...]],
        expected: Callable[[int], Any],
        calls: int,
        warmup: int,
        in_flight: int,
    ) -> dict[str, float]:
        work = (function, args, expected, calls, warmup, in_flight)
        if self.kind == "aio":
            assert self._loop is not None
            return self._loop.run(_aio_pipelined(self.client, *work))
        return gevent_wait(self._thread.submit(_thread_pipelined, self.client, *work), DEADLINE)


@contextlib.contextmanager
def runner(kind: str, service: str, url: str, persistent: bool) -> Iterator[Runner]:
    """A :class:`Runner` of ``kind`` (``aio`` or ``thread``) calling ``service``."""
    with ThreadPoolExecutor(1, thread_name_prefix="bench-caller") as thread:
        if kind == "thread":
            client = AmqpRpcClient(service, url=url, persistent=persistent)
            try:
                yield Runner(kind, client, None, thread)
            finally:
                client.stop()
            return
        loop = LoopThread()
        made = aio.AmqpRpcClient(service, url=url, persistent=persistent)
        try:
            loop.run(made.__aenter__())
            yield Runner(kind, made, loop, thread)
        finally:
            loop.run(made.close())
            loop.close()


class Timer:
    """Wall and CPU time of the timed part of a workload, and its latencies."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.start()

    def start(self) -> None:
        self.started, self.cpu_since = perf_counter(), process_time()

    def metrics(self, calls: int) -> dict[str, float]:
        elapsed, cpu = perf_counter() - self.started, process_time() - self.cpu_since
        found = {"calls/s": calls / elapsed, "cpu us/call": cpu / calls * 1e6}
        if self.latencies:  # as bench.rpc.sequential computes them
            quantiles = statistics.quantiles(self.latencies, n=100, method="inclusive")
            found = {"p50 us": quantiles[49] * 1e6, "p99 us": quantiles[98] * 1e6, **found}
        return found


def _check(value: Any, expected: Any) -> None:
    if value != expected:
        raise RuntimeError(f"wrong result {str(value)[:50]!r}, expected {str(expected)[:50]!r}")


def _thread_sequential(client: AmqpRpcClient, calls: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        _check(client.call.add(i, 1), i + 1)
    timer = Timer()
    for i in range(calls):
        before = perf_counter()
        result = client.call.add(i, i)
        timer.latencies.append(perf_counter() - before)
        _check(result, 2 * i)
    return timer.metrics(calls)


async def _aio_sequential(client: aio.AmqpRpcClient, calls: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        _check(await client.call.add(i, 1), i + 1)
    timer = Timer()
    for i in range(calls):
        before = perf_counter()
        result = await client.call.add(i, i)
        timer.latencies.append(perf_counter() - before)
        _check(result, 2 * i)
    return timer.metrics(calls)


def _thread_pipelined(
    client: AmqpRpcClient,
    function: str,
    args: Callable[[int], tuple[Any, ...]],
    expected: Callable[[int], Any],
    calls: int,
    warmup: int,
    in_flight: int,
) -> dict[str, float]:
    window: collections.deque[tuple[int, Any]] = collections.deque()
    timer = Timer()
    defer = getattr(client.defer, function)
    for i in range(warmup + calls):
        if len(window) == in_flight:
            n, oldest = window.popleft()
            _check(oldest.get(timeout=DEADLINE), expected(n))
        if i == warmup:
            timer.start()
        window.append((i, defer(*args(i))))
    for n, result in window:
        _check(result.get(timeout=DEADLINE), expected(n))
    return timer.metrics(calls)


async def _aio_pipelined(
    client: aio.AmqpRpcClient,
    function: str,
    args: Callable[[int], tuple[Any, ...]],
    expected: Callable[[int], Any],
    calls: int,
    warmup: int,
    in_flight: int,
) -> dict[str, float]:
    """At most ``in_flight`` outstanding; each result frees a slot through a done callback (no task per call)."""
    slots = asyncio.Semaphore(in_flight)
    errors: list[str] = []
    timer = Timer()
    total, settled = warmup + calls, 0
    done = asyncio.get_running_loop().create_future()

    def on_result(value: Any, future: asyncio.Future[Any]) -> None:
        nonlocal settled
        if future.exception() is not None or future.result() != value:
            errors.append(repr(future.exception()) if future.exception() else "wrong result")
        settled += 1
        if settled == warmup:
            timer.start()
        if (settled == total or errors) and not done.done():
            done.set_result(None)
        slots.release()

    defer = getattr(client.defer, function)
    for i in range(total):
        await slots.acquire()
        if errors:
            break
        defer(*args(i)).add_done_callback(functools.partial(on_result, expected(i)))
    await asyncio.wait_for(done, DEADLINE)
    if errors:
        raise RuntimeError(f"{function} failed: {errors[0]} ({len(errors)} errors)")
    return timer.metrics(calls)
