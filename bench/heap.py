"""What :func:`amphora.tune_malloc` buys a client and a server that move 64 KiB payloads.

    python -m bench.heap [--quick] [--runs N] [--calls N] [--url URL] [--json FILE]

W3's calls (``echo`` of 64 KiB as base64, 20 in flight) between a client and a server that each run in a
new process, once with glibc's malloc as it comes (``default``) and once with ``tune_malloc()`` called at
the start of both processes (``tuned``). A new process matters: how often glibc trims and regrows the heap
depends on what the process allocated before, and ``bench.rpc``'s client shares its process with the other
columns. Reports MB/s and each side's CPU time and minor page faults per call, medians of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from time import perf_counter, process_time

from gevent import subprocess

from amphora import AmqpRpcClient, tune_malloc
from bench import driver, rpc, rpc_server
from bench.common import add_run_options, broker, environment, medians, number, render

MODES = ("default", "tuned")
CALLS = 3_000
QUICK_CALLS = 500
WARMUP = 200


def _set_up(mode: str) -> None:
    """In a child process: tune malloc in the ``tuned`` mode, or exit if that is not possible here."""
    if mode == "tuned" and not tune_malloc():
        raise SystemExit("tune_malloc() did nothing here (not glibc, or MALLOC_* set)")


def serve(url: str, service: str, mode: str) -> None:
    """The server process: ``bench.rpc_server``, after tuning malloc in the ``tuned`` mode."""
    _set_up(mode)
    rpc_server.main(url, service, "transient")


def call(url: str, service: str, mode: str, calls: int) -> None:
    """The client process: ``calls`` echo calls after a warm-up; prints ``measuring``, then its metrics."""
    _set_up(mode)
    sizes = rpc.Sizes()
    payload = rpc.payload_text(sizes.payload_bytes)
    client = AmqpRpcClient(service, url=url, persistent=False)
    since: dict[str, float] = {}

    def on_progress(settled: int) -> None:
        if settled == WARMUP:
            print("measuring", flush=True)
            since.update(faults=rpc.minor_faults(), cpu=process_time(), time=perf_counter())

    rpc.pipelined(
        client, "echo", lambda i: (payload,), lambda i: payload, calls, WARMUP, sizes.payload_in_flight, on_progress
    )
    elapsed = perf_counter() - since["time"]
    metrics = {
        "MB/s": calls * sizes.payload_bytes / elapsed / 1e6,
        "client cpu us/call": (process_time() - since["cpu"]) / calls * 1e6,
        "client faults/call": (rpc.minor_faults() - since["faults"]) / calls,
    }
    print(json.dumps(metrics), flush=True)
    client.stop()


def one_run(url: str, mode: str, calls: int) -> dict[str, float]:
    """A new server and client process of ``mode``: their metrics."""
    service = f"bench_heap_{mode}_{os.getpid()}"
    server = driver.start_process("bench.heap", "serve", url, service, mode, what=f"the {mode} server")
    try:
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.heap", "call", url, service, mode, str(calls)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if client.stdout.readline().strip() != "measuring":
            raise RuntimeError(f"the {mode} client failed (exit code {client.wait()})")
        faults, cpu = rpc.minor_faults(server.pid), rpc.cpu_seconds(server.pid)
        metrics = json.loads(client.stdout.readline() or "null") or {}
        server_faults, server_cpu = rpc.minor_faults(server.pid) - faults, rpc.cpu_seconds(server.pid) - cpu
        if client.wait() != 0 or not metrics:
            raise RuntimeError(f"the {mode} client failed (exit code {client.returncode})")
    finally:
        driver.stop_process(server)
        rpc.delete_topology(url, service, None)
    return {**metrics, "server cpu us/call": server_cpu / calls * 1e6, "server faults/call": server_faults / calls}


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] in (["serve"], ["call"]):  # a child process of one_run
        _child(*sys.argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.heap", description=__doc__.split("\n")[0])
    add_run_options(parser, "runs of each mode (default 5, or 1 with --quick)")
    parser.add_argument(
        "--calls", type=int, help=f"timed calls per run (default {CALLS:,}, or {QUICK_CALLS} with --quick)"
    )
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    calls = args.calls or (QUICK_CALLS if args.quick else CALLS)
    results: dict[str, dict[str, list[dict[str, float]]]] = {mode: {"W3": []} for mode in MODES}
    with broker(args.url) as url:
        for run_number in range(1, runs + 1):
            for mode in MODES if run_number % 2 else reversed(MODES):  # neither always first
                metrics = one_run(url, mode, calls)
                results[mode]["W3"].append(metrics)
                shown = "  ".join(f"{k} {number(v)}" for k, v in metrics.items())
                print(f"run {run_number}/{runs} {mode:8} {shown}", file=sys.stderr, flush=True)
    found = {mode: medians(results)[mode]["W3"] for mode in MODES}
    rows = [
        [metric, number(found["default"][metric]), number(found["tuned"][metric]), _ratio(found, metric)]
        for metric in found["default"]
    ]
    env = ", ".join(f"{k} {v}" for k, v in environment().items())
    print(f"\n{calls:,} calls of 64 KiB, 20 in flight; medians of {runs} run(s); {env}")
    print(render(["metric", "default", "tuned", "tuned/default"], rows, left=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"calls": calls, "runs": runs, "medians": found, "results": results}, f, indent=2)


def _child(role: str, url: str, service: str, mode: str, calls: str = "0") -> None:
    if role == "serve":
        serve(url, service, mode)
    else:
        call(url, service, mode, int(calls))


def _ratio(found: dict[str, dict[str, float]], metric: str) -> str:
    default = found["default"][metric]
    return f"{found['tuned'][metric] / default:.2f}" if default else "-"


if __name__ == "__main__":
    main()
