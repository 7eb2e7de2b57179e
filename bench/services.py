"""Many services in one process: calls/s of N services served by one process against one service.

    python -m bench.services [--services 200] [--runs 3] [--seconds 5] [--in-flight 200] [--transient]
                             [--url URL] [--quick]

One child process serves the services (``python -m bench.services serve URL PREFIX N``); this process holds
one client per service and keeps ``--in-flight`` calls outstanding in all, spread over the services in turn
(as W2 of ``bench.rpc`` does for one). Each run measures one service and N services, alternately; the table
gives the medians and the ratio (issue 26's target: N services >= 0.8x one). With ``--transient``, requests
and replies are not persistent (``persistent=False`` on both sides): the broker then writes nothing to disk.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import uuid
from time import perf_counter

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

from amphora import AmqpRpcClient, AmqpRpcServer
from bench.common import add_run_options, broker, environment, number, render
from bench.driver import DEADLINE, start_process, stop_process


def serve(url: str, prefix: str, count: int, persistent: bool) -> None:
    """The child process: serve ``count`` services until stdin closes."""
    servers = [AmqpRpcServer(f"{prefix}{i}", url=url, persistent=persistent) for i in range(count)]
    for server in servers:
        server.add_function(lambda a, b: a + b, "add")
    gevent.joinall([gevent.spawn(server.serve) for server in servers], raise_error=True)
    print("ready", flush=True)
    gevent.get_hub().threadpool.apply(sys.stdin.read)
    gevent.joinall([gevent.spawn(server.stop) for server in servers])


def calls_per_second(url: str, count: int, seconds: float, in_flight: int, persistent: bool) -> float:
    """Start ``count`` services in a child process and call them from here for ``seconds``."""
    prefix = f"bench-services-{uuid.uuid4().hex[:6]}-"
    process = start_process(
        "bench.services", "serve", url, prefix, str(count), str(int(persistent)), what=f"{count} services"
    )
    starting = [gevent.spawn(AmqpRpcClient, f"{prefix}{i}", url=url, persistent=persistent) for i in range(count)]
    gevent.joinall(starting, raise_error=True)
    clients = [g.value for g in starting]
    try:
        return _call_in_turn(clients, seconds, in_flight)
    finally:
        gevent.joinall([gevent.spawn(client.stop) for client in clients])
        stop_process(process)


def _call_in_turn(clients: list[AmqpRpcClient], seconds: float, in_flight: int) -> float:
    slots, done, errors = Semaphore(in_flight), Event(), []
    settled = 0

    def on_result(expected: int, result: AsyncResult) -> None:
        nonlocal settled
        if result.exception is not None or result.value != expected:
            errors.append(repr(result.exception or result.value))
            done.set()
        settled += 1
        slots.release()

    started = perf_counter()
    for n, client in zip(itertools.count(), itertools.cycle(clients)):
        slots.acquire()
        if errors or perf_counter() - started >= seconds:
            break
        client.defer.add(n, 1).rawlink(lambda result, expected=n + 1: on_result(expected, result))
    elapsed = perf_counter() - started
    counted = settled
    for _ in range(in_flight - 1):  # wait for the rest, so the next run starts clean
        if not slots.acquire(timeout=DEADLINE):
            raise RuntimeError(f"calls did not finish within {DEADLINE} s")
    if errors:
        raise RuntimeError(f"calls failed: {errors[0]} ({len(errors)} errors)")
    return counted / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(parser, "runs of each configuration (default 3)")
    parser.add_argument("--services", type=int, default=200, help="services in the second configuration")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of calls per measurement")
    parser.add_argument("--in-flight", type=int, default=200, help="calls outstanding in all")
    parser.add_argument("--transient", action="store_true", help="requests and replies not persistent")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs or 3
    seconds = 1.0 if args.quick else args.seconds
    counts = (1, args.services)
    found: dict[int, list[float]] = {count: [] for count in counts}
    with broker(args.url) as url:
        for run in range(runs):
            for count in counts if run % 2 == 0 else counts[::-1]:
                found[count].append(calls_per_second(url, count, seconds, args.in_flight, not args.transient))
                print(f"run {run + 1}: {count} services: {number(found[count][-1])} calls/s", file=sys.stderr)
    one, many = (statistics.median(found[count]) for count in counts)
    print(environment())
    rows = [["1 service", number(one), ""], [f"{args.services} services", number(many), f"{many / one:.2f}x"]]
    print(render(["served by one process", "calls/s", "ratio"], rows, left=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
