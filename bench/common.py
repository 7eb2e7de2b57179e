"""Helpers shared by the benchmark commands (``bench.amqp_layer``, ``bench.rpc``): the broker, medians,
number formatting, the text table and the environment line."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

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


def broker_cpu(url: str) -> Callable[[], float] | None:
    """A function giving the CPU seconds used so far by the RabbitMQ node on this machine that listens on
    ``url``'s port (found by its ``RABBITMQ_NODE_PORT``, as private nodes have it); None if there is none."""
    port = f"RABBITMQ_NODE_PORT={urlsplit(url).port or 5672}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            beam = (proc / "comm").read_text().strip() == "beam.smp"
            if beam and port in (proc / "environ").read_bytes().split(b"\0"):
                return functools.partial(_cpu_seconds, proc / "stat")
        except OSError:  # gone, or not ours to read
            continue
    return None


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Result(NamedTuple):
    calls: float
    """calls/s"""
    broker_us: float
    """the broker's CPU per call, µs (NaN if its node was not found)"""

    def __str__(self) -> str:
        return f"{number(self.calls)} calls/s, broker {number(self.broker_us)} us/call"


def timed(url: str, run: Callable[[], tuple[float, int]]) -> Result:
    """``run()`` (calls/s and calls made), with the broker's CPU meanwhile."""
    cpu = broker_cpu(url)
    before = cpu() if cpu else math.nan
    rate, calls = run()
    after = cpu() if cpu else math.nan
    return Result(rate, (after - before) / calls * 1e6 if calls else math.nan)


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
