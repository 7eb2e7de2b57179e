"""Benchmark of amphora's AMQP layer against pika (gevent adapter) and a bare pamqp client.

    python -m bench.amqp_layer [--quick] [--runs N] [--url URL] [--json FILE] [--clients amphora,pika]

Starts a private RabbitMQ node (``amphora.testing.RabbitNode``) unless ``--url`` is given, runs every
workload ``--runs`` times per client (clients interleaved within each run) and prints the medians with
the ratios of ours (amphora) to each other client. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from gevent import subprocess

from amphora.testing import RabbitNode
from bench import clients, driver

OURS = "amphora"


@contextlib.contextmanager
def broker(url: str | None) -> Iterator[str]:
    """The given broker URL, or that of a private node started for this run."""
    if url:
        yield url
        return
    print("starting a private RabbitMQ node...", file=sys.stderr, flush=True)
    with RabbitNode() as node:
        yield node.url


@contextlib.contextmanager
def prepared(name: str, url: str) -> Iterator[Any]:
    """A connected client of library ``name`` with its queues and its echo process ready."""
    suffix = f"{name}.{os.getpid()}"
    confirm_queue, request_queue = f"bench.confirm.{suffix}", f"bench.rpc.{suffix}"
    client = clients.load(name)(url)
    echo = driver.start_echo(name, url, request_queue)
    try:
        client.prepare_confirm(confirm_queue)
        client.prepare_rpc(request_queue)
        yield client
        client.delete_queue(confirm_queue)
        client.delete_queue(request_queue)
        client.close()
    finally:
        echo.stdin.close()  # the echo process exits on EOF
        try:
            echo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            echo.kill()


def run(url: str, names: list[str], workloads: list[str], runs: int, sizes: driver.Sizes) -> dict:
    """Every (client, workload) result of every run: results[client][workload] = [metrics, ...]."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {n: {w: [] for w in workloads} for n in names}
    with contextlib.ExitStack() as stack:
        ready = {name: stack.enter_context(prepared(name, url)) for name in names}
        for client in ready.values():  # an untimed warm-up pass: broker queues, caches, allocators
            for workload in workloads:
                driver.WORKLOADS[workload](client, driver.QUICK)
        for number in range(1, runs + 1):
            order = names[number % len(names) :] + names[: number % len(names)]  # no client always first
            for name in order:
                client = ready[name]
                for workload in workloads:
                    gc.collect()
                    metrics = driver.WORKLOADS[workload](client, sizes)
                    results[name][workload].append(metrics)
                    shown = "  ".join(f"{k} {_number(v)}" for k, v in metrics.items())
                    print(f"run {number}/{runs}  {name:8} {workload:10} {shown}", file=sys.stderr, flush=True)
    return results


def summarize(results: dict) -> tuple[dict, dict]:
    """Medians per client/workload/metric, and the ratio ours/other of every median."""
    medians = {
        name: {
            workload: {metric: statistics.median(r[metric] for r in runs) for metric in runs[0]}
            for workload, runs in per_workload.items()
        }
        for name, per_workload in results.items()
    }
    ratios: dict[str, dict] = {}
    if OURS in medians:
        for other in medians:
            if other != OURS:
                ratios[f"{OURS}/{other}"] = {
                    workload: {metric: value / medians[other][workload][metric] for metric, value in metrics.items()}
                    for workload, metrics in medians[OURS].items()
                }
    return medians, ratios


def table(medians: dict, ratios: dict) -> str:
    names = list(medians)
    header = ["workload", "metric", *names, *ratios]
    rows = []
    for workload, metrics in next(iter(medians.values())).items():
        for metric in metrics:
            rows.append(
                [workload, metric]
                + [_number(medians[n][workload][metric]) for n in names]
                + [f"{ratio[workload][metric]:.2f}" for ratio in ratios.values()]
            )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def environment() -> dict[str, str]:
    versions = {lib: metadata.version(lib) for lib in ("gevent", "pamqp", "pika")}
    return {"python": platform.python_version(), "cpus": str(os.cpu_count()), **versions}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.amqp_layer", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="use this broker instead of starting a private node")
    parser.add_argument("--runs", type=int, help="runs per client and workload (default 5, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads and one run: a smoke test")
    parser.add_argument("--json", metavar="FILE", help="also write every result, the medians and ratios here")
    parser.add_argument("--clients", default=",".join(clients.CLIENTS), help="comma-separated (default: all)")
    parser.add_argument("--workloads", default=",".join(driver.WORKLOADS), help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    names, workloads = args.clients.split(","), args.workloads.split(",")
    for name in names:
        if name not in clients.CLIENTS:
            parser.error(f"unknown client {name!r}: choose from {', '.join(clients.CLIENTS)}")
    for workload in workloads:
        if workload not in driver.WORKLOADS:
            parser.error(f"unknown workload {workload!r}: choose from {', '.join(driver.WORKLOADS)}")
    sizes = driver.QUICK if args.quick else driver.Sizes()
    runs = args.runs or (1 if args.quick else 5)

    with broker(args.url) as url:
        results = run(url, names, workloads, runs, sizes)
    medians, ratios = summarize(results)
    env = environment()
    print(f"\nmedians of {runs} run(s); " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(table(medians, ratios))
    if ratios:
        print(f"ratios are {OURS}/other: above 1 is better for msgs/s and rounds/s, below 1 for us (latency, CPU)")
    if args.json:
        with open(args.json, "w") as f:
            report = {"environment": env, "runs": runs, "sizes": dataclasses.asdict(sizes)}
            json.dump({**report, "medians": medians, "ratios": ratios, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
