"""What tracing (``tracing=``, OpenTelemetry) costs: bench.rpc's W1 and W2, tracing off, API only, and on.

    python -m bench.tracing [--quick] [--runs N] [--url URL] [--json FILE]

Client and server run in this process (transient, as bench.rpc's ``transient`` mode), so ``cpu us/call`` is
both sides' CPU per call. ``api`` is ``tracing=True`` with no tracer provider set: OpenTelemetry's API alone,
whose spans record nothing (what tracing costs where no SDK is configured). ``on`` gives both an OpenTelemetry
SDK TracerProvider whose batch span processor exports to an exporter that drops the spans: the cost of making,
propagating and ending them (two per call here), not of sending them anywhere. The columns take turns,
starting with a different one each run. Needs the ``otel`` extra and opentelemetry-sdk. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from amphora import AmqpRpcClient, AmqpRpcServer
from bench.common import add_run_options, broker, environment, medians, number, render
from bench.rpc import QUICK, Side, Sizes, delete_topology, pipelined, sequential
from bench.rpc_server import add

COLUMNS = ("off", "api", "on")


class Dropping(SpanExporter):
    """Takes every batch of spans and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracing_of(column: str) -> Any:
    """The ``tracing=`` of a column."""
    if column != "on":
        return column == "api"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return provider


@contextlib.contextmanager
def traced_pair(url: str, column: str) -> Iterator[Side]:
    """A client and a server of a service of their own, both with the column's tracing."""
    service = f"bench_tracing_{column}_{os.getpid()}"
    tracing = tracing_of(column)
    server = AmqpRpcServer(service, url=url, persistent=False, tracing=tracing)
    server.add_function(add)
    server.serve()
    client = AmqpRpcClient(service, url=url, persistent=False, tracing=tracing)
    try:
        yield Side(column, client)
    finally:
        client.stop()
        server.stop()
        delete_topology(url, service, client.reply_queue)


def workload(side: Side, name: str, sizes: Sizes) -> dict[str, float]:
    if name == "W1":
        return sequential(side, sizes.seq_calls, sizes.seq_warmup)
    calls, warmup, in_flight = sizes.pipelined_calls, sizes.pipelined_warmup, sizes.pipelined_in_flight
    return pipelined(side.client, "add", lambda i: (i, i), lambda i: 2 * i, calls, warmup, in_flight)


def run(url: str, runs: int, sizes: Sizes) -> dict[str, dict[str, list[dict[str, float]]]]:
    """results[column][workload] = [metrics of each run]."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {c: {"W1": [], "W2": []} for c in COLUMNS}
    with contextlib.ExitStack() as stack:
        sides = {column: stack.enter_context(traced_pair(url, column)) for column in COLUMNS}
        for side in sides.values():  # an untimed pass
            for name in ("W1", "W2"):
                workload(side, name, QUICK)
        for run_number in range(1, runs + 1):
            rotation = run_number % len(COLUMNS)
            for column in COLUMNS[rotation:] + COLUMNS[:rotation]:
                for name in ("W1", "W2"):
                    gc.collect()
                    metrics = workload(sides[column], name, sizes)
                    results[column][name].append(metrics)
                    shown = "  ".join(f"{k} {number(v)}" for k, v in metrics.items())
                    print(f"run {run_number}/{runs}  {column:3} {name}  {shown}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__.split("\n")[0])
    add_run_options(parser, "runs (default 5, or 1 with --quick)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    runs = args.runs or (1 if args.quick else 5)
    load_before = os.getloadavg()[0]
    with broker(args.url) as url:
        results = run(url, runs, sizes)
    found = medians(results)
    rows = [
        [name, metric, *(number(found[c][name][metric]) for c in COLUMNS)]
        + [f"{found[c][name][metric] / found['off'][name][metric]:.2f}" for c in COLUMNS[1:]]
        for name in ("W1", "W2")
        for metric in found["off"][name]
    ]
    env = {**environment(), "load average (1 min) before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"}
    print(f"\nmedians of {runs} run(s); " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(render(["workload", "metric", *COLUMNS, *(f"{c}/off" for c in COLUMNS[1:])], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "runs": runs, "medians": found, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
