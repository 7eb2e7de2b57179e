"""Many services in one process: calls/s of N services served by one process against one service.

    python -m bench.services [--services 200] [--runs 3] [--seconds 5] [--in-flight 200] [--transient]
                             [--floor] [--url URL] [--quick]

One child process serves the services (``python -m bench.services serve URL PREFIX N``); this process holds
one client per service and keeps ``--in-flight`` calls outstanding in all, spread over the services in turn
(as W2 of ``bench.rpc`` does for one). Each run measures one service and N services, alternately; the table
gives the medians and the ratio (issue 26's target: N services >= 0.8x one). With ``--transient``, requests
and replies are not persistent (``persistent=False`` on both sides): the broker then writes nothing to disk.
With ``--floor``, each run also measures the same calls made with nothing but the AMQP layer, every channel
and the reply queue shared (:mod:`bench.services_floor`): the ratio the broker itself allows. On a private
node (no ``--url``), the broker's CPU per call is given too.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import uuid
from collections.abc import Callable
from time import perf_counter

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

from amphora import AmqpRpcClient, AmqpRpcServer
from bench import services_floor
from bench.common import Result, add_run_options, broker, environment, number, render, timed
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


def calls_per_second(url: str, count: int, seconds: float, in_flight: int, persistent: bool) -> Result:
    """Start ``count`` services in a child process and call them from here for ``seconds``."""
    prefix = f"bench-services-{uuid.uuid4().hex[:6]}-"
    process = start_process(
        "bench.services", "serve", url, prefix, str(count), str(int(persistent)), what=f"{count} services"
    )
    starting = [gevent.spawn(AmqpRpcClient, f"{prefix}{i}", url=url, persistent=persistent) for i in range(count)]
    gevent.joinall(starting, raise_error=True)
    clients = [g.value for g in starting]
    try:
        return timed(url, lambda: _call_in_turn(clients, seconds, in_flight))
    finally:
        gevent.joinall([gevent.spawn(client.stop) for client in clients])
        stop_process(process)


Measure = Callable[[str, int, float, int, bool], Result]


def _call_in_turn(clients: list[AmqpRpcClient], seconds: float, in_flight: int) -> tuple[float, int]:
    """Calls/s, and the calls made (the ones still outstanding at the end included)."""
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
    return counted / elapsed, n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(parser, "runs of each configuration (default 3)")
    parser.add_argument("--services", type=int, default=200, help="services in the second configuration")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of calls per measurement")
    parser.add_argument("--in-flight", type=int, default=200, help="calls outstanding in all")
    parser.add_argument("--transient", action="store_true", help="requests and replies not persistent")
    parser.add_argument("--floor", action="store_true", help="also the same calls with the AMQP layer alone")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs or 3
    seconds = 1.0 if args.quick else args.seconds
    counts = (1, args.services)
    clients: dict[str, Measure] = {"amphora": calls_per_second}
    if args.floor:
        clients["floor"] = services_floor.calls_per_second
    found: dict[tuple[str, int], list[Result]] = {(c, n): [] for c in clients for n in counts}
    with broker(args.url) as url:
        for run in range(runs):
            for count in counts if run % 2 == 0 else counts[::-1]:
                for client, measure in clients.items():
                    result = measure(url, count, seconds, args.in_flight, not args.transient)
                    found[client, count].append(result)
                    print(f"run {run + 1}: {client}, {count} services: {result}", file=sys.stderr)
    print(environment())
    rows = []
    for client in clients:
        one, many = (statistics.median(r.calls for r in found[client, count]) for count in counts)
        cpu_one, cpu_many = (statistics.median(r.broker_us for r in found[client, count]) for count in counts)
        rows.append([client, "1 service", number(one), "", number(cpu_one)])
        rows.append([client, f"{args.services} services", number(many), f"{many / one:.2f}x", number(cpu_many)])
    print(render(["client", "served by one process", "calls/s", "ratio", "broker CPU us/call"], rows))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
