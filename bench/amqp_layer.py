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
import sys
from collections.abc import Iterator
from typing import Any

from bench import clients, driver
from bench.common import add_run_options, broker, environment, medians, number, render

OURS = "amphora"


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
        driver.stop_process(echo)


def run(url: str, names: list[str], workloads: list[str], runs: int, sizes: driver.Sizes) -> dict:
    """Every (client, workload) result of every run: results[client][workload] = [metrics, ...]."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {n: {w: [] for w in workloads} for n in names}
    with contextlib.ExitStack() as stack:
        ready = {name: stack.enter_context(prepared(name, url)) for name in names}
        for client in ready.values():  # an untimed warm-up pass: broker queues, caches, allocators
            for workload in workloads:
                driver.WORKLOADS[workload](client, driver.QUICK)
        for run_number in range(1, runs + 1):
            rotation = run_number % len(names)
            order = names[rotation:] + names[:rotation]  # no client always first
            for name in order:
                client = ready[name]
                for workload in workloads:
                    gc.collect()
                    metrics = driver.WORKLOADS[workload](client, sizes)
                    results[name][workload].append(metrics)
                    shown = "  ".join(f"{k} {number(v)}" for k, v in metrics.items())
                    print(f"run {run_number}/{runs}  {name:8} {workload:10} {shown}", file=sys.stderr, flush=True)
    return results


def summarize(results: dict) -> tuple[dict, dict]:
    """Medians per client/workload/metric, and the ratio ours/other of every median."""
    per_client = medians(results)
    ratios: dict[str, dict] = {}
    if OURS in per_client:
        for other in per_client:
            if other != OURS:
                ratios[f"{OURS}/{other}"] = {
                    workload: {metric: value / per_client[other][workload][metric] for metric, value in metrics.items()}
                    for workload, metrics in per_client[OURS].items()
                }
    return per_client, ratios


def table(medians: dict, ratios: dict) -> str:
    names = list(medians)
    header = ["workload", "metric", *names, *ratios]
    rows = []
    for workload, metrics in next(iter(medians.values())).items():
        for metric in metrics:
            rows.append(
                [workload, metric]
                + [number(medians[n][workload][metric]) for n in names]
                + [f"{ratio[workload][metric]:.2f}" for ratio in ratios.values()]
            )
    return render(header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.amqp_layer", description=__doc__.split("\n")[0])
    add_run_options(parser, "runs per client and workload (default 5, or 1 with --quick)")
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
    env = environment(("gevent", "pamqp", "pika"))
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
