"""Helpers shared by the benchmark commands (``bench.amqp_layer``, ``bench.rpc``): the broker, medians,
number formatting, the text table and the environment line."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata

from amphora.testing import RabbitNode


@contextlib.contextmanager
def broker(url: str | None) -> Iterator[str]:
    """The given broker URL, or that of a private node started for this run."""
    if url:
        yield url
        return
    print("starting a private RabbitMQ node...", file=sys.stderr, flush=True)
    with RabbitNode() as node:
        yield node.url


def medians(results: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """results[name][workload] = [metrics of each run, ...] -> the median of every metric."""
    return {
        name: {
            workload: {metric: statistics.median(r[metric] for r in runs) for metric in runs[0]}
            for workload, runs in per_workload.items()
            if runs
        }
        for name, per_workload in results.items()
    }


def number(value: float) -> str:
    """A metric for the table: one decimal below 100, thousands separators above."""
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> str:
    """An aligned text table: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def environment(libraries: Sequence[str] = ("gevent", "pamqp")) -> dict[str, str]:
    """Python version, CPU count and the versions of ``libraries``."""
    versions = {lib: metadata.version(lib) for lib in libraries}
    return {"python": platform.python_version(), "cpus": str(os.cpu_count()), **versions}


def add_run_options(parser: argparse.ArgumentParser, runs_help: str) -> None:
    """The options every benchmark command takes: --url, --runs, --quick, --json."""
    parser.add_argument("--url", help="use this broker instead of starting a private node")
    parser.add_argument("--runs", type=int, help=runs_help)
    parser.add_argument("--quick", action="store_true", help="smaller workloads and one run: a smoke test")
    parser.add_argument("--json", metavar="FILE", help="also write every result, the medians and ratios here")
