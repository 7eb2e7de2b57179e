"""W2 of ``bench.rpc`` against ``amphora serve --processes N``: what more server processes give.

    python -m bench.processes [--quick] [--runs N] [--url URL] [--json FILE] [--processes 1,2]
                              [--mode transient|reliable] [--handler-us US]

Starts a private RabbitMQ node unless ``--url`` is given. Each run starts, for each count N in turn (the
order alternating between runs), ``python -m amphora serve bench.processes:make_server --processes N``
serving ``add(a, b)`` (the server of ``bench/rpc_server.py``), waits until N servers consume the request
queue, then makes W2's pipelined calls from this process (20,000 ``add`` calls, 100 in flight, after 1,000
warm-up calls; with ``--handler-us US``, calls of ``spin(a, b, US)``, which burns US microseconds of CPU in
the handler) and stops the supervisor with SIGTERM. Prints the medians: calls/s, and the CPU time per call
of this client, of all the server processes together and of the broker. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from gevent import subprocess

from amphora import AmqpRpcClient, AmqpRpcServer, amqp
from amphora.amqp.errors import NotFound
from amphora.topology import ServiceTopology
from bench.common import add_run_options, broker, environment, medians, number, render
from bench.rpc import QUICK, Sizes, cpu_seconds, delete_topology, listening_pid, pipelined
from bench.rpc_server import MODES, add

SERVICE_VARIABLE = "BENCH_PROCESSES_SERVICE"
MODE_VARIABLE = "BENCH_PROCESSES_MODE"
START_TIMEOUT = 60.0


def make_server(url: str | None = None, concurrency: int = 100) -> AmqpRpcServer:
    """The server each ``amphora serve`` child builds: the service and mode come from the environment."""
    persistent = MODES[os.environ.get(MODE_VARIABLE, "transient")]
    server = AmqpRpcServer(os.environ[SERVICE_VARIABLE], url=url, concurrency=concurrency, persistent=persistent)
    server.add_function(add)
    server.add_function(spin)
    return server


def spin(a: int, b: int, microseconds: int) -> int:
    """``a + b`` after ``microseconds`` of CPU work: a handler that needs a core of its own."""
    until = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < until:
        pass
    return a + b


def consumers(url: str, queue: str) -> int:
    try:
        with amqp.connect(url) as connection:
            return connection.channel().queue_declare(queue, passive=True).consumer_count
    except NotFound:
        return 0


def children(pid: int) -> list[int]:
    """The pids of the children of ``pid`` (Linux)."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def one_run(url: str, count: int, mode: str, sizes: Sizes, broker_pid: int | None, handler_us: int) -> dict[str, float]:
    service = f"bench_processes_{os.getpid()}_{count}"
    command = [sys.executable, "-m", "amphora", "serve", "bench.processes:make_server", "--url", url]
    environment = {**os.environ, SERVICE_VARIABLE: service, MODE_VARIABLE: mode}
    supervisor = subprocess.Popen([*command, "--processes", str(count), "--log-level", "WARNING"], env=environment)
    client = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while consumers(url, ServiceTopology(service).default_queue) < count:
            if supervisor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{count} server process(es) did not start (supervisor: {supervisor.poll()})")
            time.sleep(0.05)
        servers = children(supervisor.pid)
        client = AmqpRpcClient(service, url=url, persistent=MODES[mode])
        total = sizes.pipelined_calls + sizes.pipelined_warmup
        server_cpu = sum(cpu_seconds(pid) for pid in servers)
        broker_cpu = cpu_seconds(broker_pid) if broker_pid else 0.0
        metrics = pipelined(
            client,
            "spin" if handler_us else "add",
            (lambda i: (i, i, handler_us)) if handler_us else (lambda i: (i, i)),
            lambda i: 2 * i,
            sizes.pipelined_calls,
            sizes.pipelined_warmup,
            sizes.pipelined_in_flight,
        )
        metrics["servers cpu us/call"] = (sum(cpu_seconds(pid) for pid in servers) - server_cpu) / total * 1e6
        if broker_pid:
            metrics["broker cpu us/call"] = (cpu_seconds(broker_pid) - broker_cpu) / total * 1e6
        return metrics
    finally:
        if client is not None:
            client.stop()
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=60)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()
        delete_topology(url, service, client.reply_queue if client is not None else None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__.split("\n")[0])
    add_run_options(parser, "runs per process count (default 5, or 1 with --quick)")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default: 1,2)")
    parser.add_argument("--mode", default="transient", choices=list(MODES), help="as in bench.rpc (default: transient)")
    parser.add_argument(
        "--handler-us",
        type=int,
        default=0,
        metavar="US",
        help="call spin(a, b, US), which takes US microseconds of CPU, instead of add (default: 0, add)",
    )
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.processes.split(",")]
    sizes = QUICK if args.quick else Sizes()
    runs = args.runs or (1 if args.quick else 5)
    results: dict[str, dict[str, list[dict[str, float]]]] = {f"{count} process(es)": {"W2": []} for count in counts}
    load_before = os.getloadavg()[0]
    with broker(args.url) as url:
        broker_pid = listening_pid(url)
        for run in range(runs):
            for count in counts if run % 2 == 0 else counts[::-1]:
                measured = one_run(url, count, args.mode, sizes, broker_pid, args.handler_us)
                results[f"{count} process(es)"]["W2"].append(measured)
                print(f"run {run + 1}: {count} process(es): {json.dumps(measured)}", file=sys.stderr, flush=True)
    found = medians(results)
    env = {**environment(), "load average (1 min) before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"}
    what = f"spin {args.handler_us} us" if args.handler_us else "add"
    print(f"\nW2 ({args.mode}, {what}), medians of {runs} run(s); " + ", ".join(f"{k} {v}" for k, v in env.items()))
    metrics = list(next(iter(found.values()))["W2"])
    first = found[f"{counts[0]} process(es)"]["W2"]["calls/s"]
    rows = [
        [name, *(number(values["W2"][metric]) for metric in metrics), f"{values['W2']['calls/s'] / first:.2f}"]
        for name, values in found.items()
    ]
    print(render(["servers", *metrics, f"calls/s vs {counts[0]}"], rows, left=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "runs": runs, "medians": found, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
