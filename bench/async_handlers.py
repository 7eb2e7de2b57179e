"""Benchmark of ``async def`` handlers against plain ones, called by the gevent client.

    python -m bench.async_handlers [--quick] [--runs N] [--url URL] [--json FILE] [--hostings plain,gevent,...]

Each column is a server process (``bench/async_server.py``): ``plain`` (a gevent server, a plain handler),
``gevent`` (the same server, an ``async def`` handler run on amphora's own event loop), ``asyncio`` and
``uvloop`` (the server hosted by an asyncio application, its ``async def`` handler run on the application's
loop). The client is the same gevent AmqpRpcClient (reliable mode: persistent messages, confirms) in this
process. W1: sequential calls (latency); W2: 100 calls in flight (throughput; ``cpu us/call`` is the
client's, ``server cpu us/call`` the server process's, all its threads, the warm-up included). Prints the
medians and each column's ratio to ``plain``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from amphora import AmqpRpcClient
from bench import driver
from bench.async_server import HOSTINGS
from bench.common import add_run_options, broker, environment, medians, number, render
from bench.rpc import QUICK, Side, Sizes, cpu_seconds, delete_topology, pipelined, sequential

METRICS = (("W1", "p50 us"), ("W1", "p99 us"), ("W2", "calls/s"), ("W2", "cpu us/call"), ("W2", "server cpu us/call"))


def measure(url: str, hosting: str, sizes: Sizes) -> dict[str, dict[str, float]]:
    """W1 and W2 against a fresh server process of ``hosting`` and its own service."""
    service = f"bench.async.{hosting}.{uuid.uuid4().hex[:6]}"
    server = driver.start_process("bench.async_server", url, service, hosting, what=f"the {hosting} server")
    client = AmqpRpcClient(service, url=url)
    try:
        w1 = sequential(Side(hosting, client), sizes.seq_calls, sizes.seq_warmup)
        server_cpu = cpu_seconds(server.pid)
        w2 = pipelined(
            client,
            "add",
            lambda i: (i, i),
            lambda i: 2 * i,
            sizes.pipelined_calls,
            sizes.pipelined_warmup,
            sizes.pipelined_in_flight,
        )
        total = sizes.pipelined_calls + sizes.pipelined_warmup
        w2["server cpu us/call"] = (cpu_seconds(server.pid) - server_cpu) / total * 1e6
        return {"W1": w1, "W2": w2}
    finally:
        client.stop()
        driver.stop_process(server)
        delete_topology(url, service, client.reply_queue)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.async_handlers", description=__doc__.split("\n")[0])
    add_run_options(parser, "runs (default 5, or 1 with --quick)")
    parser.add_argument("--hostings", default=",".join(HOSTINGS), help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    hostings = args.hostings.split(",")
    for hosting in hostings:
        if hosting not in HOSTINGS:
            parser.error(f"unknown hosting {hosting!r}: choose from {', '.join(HOSTINGS)}")
    sizes = QUICK if args.quick else Sizes()
    runs = args.runs or (1 if args.quick else 5)
    results: dict[str, dict[str, list[dict[str, float]]]] = {h: {"W1": [], "W2": []} for h in hostings}
    with broker(args.url) as url:
        for _ in range(runs):  # interleaved, so that a slow moment of the machine hits every column
            for hosting in hostings:
                for workload, metrics in measure(url, hosting, sizes).items():
                    results[hosting][workload].append(metrics)
    found = medians(results)
    header = ["workload", "metric", *hostings, *(f"{h}/plain" for h in hostings if h != "plain")]
    rows = []
    for workload, metric in METRICS:
        values = [found[h][workload][metric] for h in hostings]
        base: Any = found.get("plain", {}).get(workload, {}).get(metric)
        ratios = [f"{found[h][workload][metric] / base:.2f}" if base else "-" for h in hostings if h != "plain"]
        rows.append([workload, metric, *map(number, values), *ratios])
    env = environment()
    print(f"\nmedians of {runs} run(s); " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(render(header, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "runs": runs, "medians": found, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
