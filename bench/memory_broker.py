"""``python -m bench.memory_broker``: what a unit test pays for its broker, on memory:// and on RabbitMQ.

In one process, as a unit test has them: the time to get a broker (a private node's start, or nothing), to
start a server and a client and get the first reply, one call after another, and many calls at once.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from amphora import AmqpRpcClient, AmqpRpcServer
from amphora.testing import RabbitNode
from bench.common import environment, render

SEQUENTIAL = 500
CONCURRENT = 2000


def measure(url: str, service: str) -> dict[str, float]:
    """Start, sequential latency and concurrent throughput of one client and server on ``url``."""
    started = time.perf_counter()
    server = AmqpRpcServer(service, url=url, concurrency=64)
    server.add_function(lambda x: x, name="echo")
    server.serve()
    client = AmqpRpcClient(service, url=url)
    try:
        client.call.echo(0)
        start_ms = (time.perf_counter() - started) * 1000
        latencies = []
        for i in range(SEQUENTIAL):
            begun = time.perf_counter()
            client.call.echo(i)
            latencies.append(time.perf_counter() - begun)
        begun = time.perf_counter()
        pending = [client.defer.echo(i) for i in range(CONCURRENT)]
        for result in pending:
            result.get(timeout=60)
        throughput = CONCURRENT / (time.perf_counter() - begun)
    finally:
        client.stop()
        server.stop()
    return {
        "start ms": start_ms,
        "call median ms": statistics.median(latencies) * 1000,
        "call p99 ms": sorted(latencies)[int(len(latencies) * 0.99)] * 1000,
        "calls/s": throughput,
    }


def timed(make: Callable[[], object]) -> float:
    begun = time.perf_counter()
    make()
    return (time.perf_counter() - begun) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="a RabbitMQ URL to compare with, instead of starting a private node")
    args = parser.parse_args()
    rows = []
    memory = measure("memory://bench", "bench_memory")
    rows.append(["memory://", "0", *(f"{v:,.1f}" for v in memory.values())])
    if args.url:
        rabbit, node_ms = measure(args.url, "bench_rabbitmq"), 0.0
    else:
        node = RabbitNode()
        node_ms = timed(node.start)
        try:
            rabbit = measure(node.url, "bench_rabbitmq")
        finally:
            node.close()
    rows.append(["RabbitMQ", f"{node_ms:,.0f}", *(f"{v:,.1f}" for v in rabbit.values())])
    print(render(["broker", "node start ms", *memory], rows, left=1))
    print(environment())


if __name__ == "__main__":
    main()
