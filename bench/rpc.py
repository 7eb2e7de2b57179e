"""Benchmark of amphora's RPC (AmqpRpcClient and AmqpRpcServer) against a bare pamqp request/reply.

    python -m bench.rpc [--quick] [--runs N] [--url URL] [--json FILE] [--modes transient,reliable]
                        [--workloads W1,W2,W3,M-inflight,M-long] [--memory-calls N] [--clients aio,thread]

Starts a private RabbitMQ node (``amphora.testing.RabbitNode``) unless ``--url`` is given. The amphora
server runs in its own process (``bench/rpc_server.py``), the client in this one; the yardstick is the bare
pamqp client of ``bench/clients/raw_pamqp.py`` against its echo process (``bench/echo.py``), in the same
run, and beside it ``raw-protocol``, the same client doing what amphora's protocol asks of the broker
(``bench/clients/raw_protocol.py``). Prints the medians, the ratios to raw with the targets, and each mode's
ratios to raw-protocol. ``--clients aio,thread`` adds, for each mode, the columns of the asyncio client and
of the gevent client called from another OS thread (``bench/runtimes.py``), compared with the gevent client.
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import gc
import json
import os
import random
import statistics
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from time import perf_counter, process_time
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent import subprocess
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

from amphora import AmqpRpcClient, amqp
from amphora.amqp.errors import AMQPError
from amphora.topology import ServiceTopology
from bench import clients, driver, runtimes
from bench.common import add_run_options, broker, environment, medians, number, render
from bench.rpc_server import MODES

RAW = "raw"
FLOOR = "raw-protocol"
YARDSTICKS = (RAW, FLOOR)
"""The bare pamqp columns: ``raw`` the yardstick of the targets, ``raw-protocol`` the same client doing what
amphora's protocol asks of the broker (``bench/clients/raw_protocol.py``)."""
TIMED = ("W1", "W2", "W3")
MEMORY = ("M-inflight", "M-long")
WORKLOADS = TIMED + MEMORY
DEADLINE = driver.DEADLINE
MEMORY_TIMEOUT = 3600.0
"""The call timeout of the memory workloads' clients: no call may expire while the backlog drains."""

TARGETS: dict[tuple[str, str, str], tuple[str, float]] = {
    ("transient", "W1", "p50 us"): ("<=", 1.3),
    ("transient", "W2", "calls/s"): (">=", 0.6),
    ("transient", "W3", "MB/s"): (">=", 0.7),
    ("reliable", "W2", "calls/s"): (">=", 0.35),
}
"""(mode, workload, metric) -> the ratio amphora/raw it should meet."""
IN_FLIGHT_METRIC = "client MiB, all in flight"
IN_FLIGHT_TARGET_MIB = 200.0
IN_FLIGHT_TARGET_CALLS = 100_000


@dataclasses.dataclass(frozen=True)
class Sizes:
    seq_calls: int = 2_000  # W1
    seq_warmup: int = 200
    pipelined_calls: int = 20_000  # W2
    pipelined_warmup: int = 1_000
    pipelined_in_flight: int = 100
    payload_calls: int = 1_000  # W3
    payload_warmup: int = 20
    payload_in_flight: int = 20
    payload_bytes: int = 64 * 1024
    in_flight_calls: int = 100_000  # M-inflight
    memory_calls: int = 200_000  # M-long
    memory_in_flight: int = 100


QUICK = Sizes(
    seq_calls=500,
    seq_warmup=50,
    pipelined_calls=5_000,
    pipelined_warmup=200,
    payload_calls=200,
    in_flight_calls=20_000,
    memory_calls=20_000,
)


# --- processes and sides ---------------------------------------------------------------------------


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size (VmRSS) of a process in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat from the 3rd on (after the command name, which may hold spaces)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = _stat_fields(pid)  # utime is the 14th field, stime the 15th
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minor_faults(pid: int | str = "self") -> int:
    """Minor page faults of a process so far (the 10th field)."""
    return int(_stat_fields(pid)[7])


def listening_pid(url: str) -> int | None:
    """The pid of the local process listening on the broker URL's port (None if remote or not visible)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = f":{parts.port or 5672:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(port) and fields[3] == "0A":  # local address, state LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
    return None


@dataclasses.dataclass
class Side:
    """One column of the table: a connected client and its responder process."""

    name: str
    client: Any
    process: subprocess.Popen | None = None
    runner: runtimes.Runner | None = None
    """Runs the timed workloads instead of ``client``, for an ``aio`` or ``thread`` column."""

    def server_cpu(self) -> float:
        return cpu_seconds(self.process.pid) if self.process is not None else 0.0


def start_server(url: str, service: str, mode: str) -> subprocess.Popen:
    return driver.start_process("bench.rpc_server", url, service, mode, what=f"the {mode} amphora server")


@contextlib.contextmanager
def yardstick_side(url: str, name: str) -> Iterator[Side]:
    """A bare pamqp column (``raw`` or ``raw-protocol``) with its echo process, as ``bench.amqp_layer`` runs them."""
    queue = f"bench.rpc.{name}.{os.getpid()}"
    client = clients.load(name)(url)
    echo = driver.start_echo(name, url, queue)
    try:
        client.prepare_rpc(queue)
        yield Side(name, client, echo)
        client.delete_queue(queue)
        client.close()
    finally:
        driver.stop_process(echo)


@contextlib.contextmanager
def amphora_side(url: str, mode: str, service: str, with_server: bool = True, **options: Any) -> Iterator[Side]:
    """An AmqpRpcClient of ``mode`` here and (unless ``with_server`` is False) its server process."""
    side = Side(mode, None)
    with contextlib.ExitStack() as cleanup:  # in reverse: stop the client, stop the server, delete the topology
        cleanup.callback(lambda: delete_topology(url, service, side.client.reply_queue if side.client else None))
        cleanup.callback(lambda: _stop_server(side))
        if with_server:
            side.process = start_server(url, service, mode)
        side.client = AmqpRpcClient(service, url=url, persistent=MODES[mode], **options)
        cleanup.callback(side.client.stop)
        yield side


@contextlib.contextmanager
def runtime_side(url: str, mode: str, kind: str, service: str) -> Iterator[Side]:
    """The column ``MODE-KIND`` (:mod:`bench.runtimes`): its server process, and a runner of that client."""
    with amphora_side(url, mode, service) as side, runtimes.runner(kind, service, url, MODES[mode]) as runner:
        side.name, side.runner = runtimes.column(mode, kind), runner
        yield side


def _stop_server(side: Side) -> None:
    if side.process is not None:
        driver.stop_process(side.process)


def delete_topology(url: str, service: str, reply_queue: str | None) -> None:
    """Delete the service's durable queues and exchanges, so a named broker keeps no leftovers."""
    topology = ServiceTopology(service)
    queues = [topology.default_queue, topology.dead_queue] + ([reply_queue] if reply_queue else [])
    exchanges = [topology.request_exchange, topology.response_exchange, topology.dead_exchange]
    try:
        with amqp.connect(url) as connection:
            for queue in queues:
                connection.channel().queue_delete(queue)
            for exchange in exchanges:
                connection.channel().exchange_delete(exchange)
    except AMQPError as exc:
        print(f"could not delete the topology of {service}: {exc}", file=sys.stderr, flush=True)


# --- the workloads ---------------------------------------------------------------------------------


def request_body(function: str, *args: Any) -> bytes:
    """The JSON body amphora sends for ``function(*args)``: the raw client sends the same bytes."""
    return json.dumps({"func": function, "args": list(args), "kwargs": {}}, separators=(",", ":")).encode()


def payload_text(size: int) -> str:
    """``size`` random bytes as base64 text: JSON carries no bytes."""
    return base64.b64encode(random.Random(size).randbytes(size)).decode()


def sequential(side: Side, calls: int, warmup: int) -> dict[str, float]:
    """``calls`` blocking ``client.call.add`` after ``warmup`` of them; p50, p99, calls/s, cpu."""
    client = side.client
    for i in range(warmup):
        _check(client.call.add(i, 1), i + 1)
    latencies = []
    cpu_since, started = process_time(), perf_counter()
    for i in range(calls):
        before = perf_counter()
        result = client.call.add(i, i)
        latencies.append(perf_counter() - before)
        _check(result, 2 * i)
    elapsed, cpu = perf_counter() - started, process_time() - cpu_since
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50 us": quantiles[49] * 1e6,
        "p99 us": quantiles[98] * 1e6,
        "calls/s": calls / elapsed,
        "cpu us/call": cpu / calls * 1e6,
    }


def pipelined(
    client: AmqpRpcClient,
    function: str,
    args: Callable[[int], tuple[Any, ...]],
    expected: Callable[[int], Any],
    calls: int,
    warmup: int,
    in_flight: int,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """``warmup + calls`` ``client.defer`` calls, at most ``in_flight`` outstanding; calls/s, cpu.

    One greenlet defers while fewer than ``in_flight`` calls are pending; each result wakes it through
    ``AsyncResult.rawlink`` (no greenlet per call). ``on_progress(settled)`` runs after every result.
    """
    total = warmup + calls
    slots = Semaphore(in_flight)
    done, errors = Event(), []
    settled = 0
    started, cpu_since = perf_counter(), process_time()

    def on_result(value: Any, result: AsyncResult) -> None:
        nonlocal settled, started, cpu_since
        if result.exception is not None:
            errors.append(repr(result.exception))
        elif result.value != value:
            errors.append(f"{function} returned {str(result.value)[:50]!r}, not {str(value)[:50]!r}")
        settled += 1
        if settled == warmup:
            started, cpu_since = perf_counter(), process_time()
        if on_progress is not None:
            on_progress(settled)
        if settled == total or errors:
            done.set()
        slots.release()

    defer = client.defer
    for i in range(total):
        slots.acquire()
        if errors:
            break
        getattr(defer, function)(*args(i)).rawlink(partial(on_result, expected(i)))
    if not done.wait(DEADLINE):
        raise RuntimeError(f"{total} calls to {function} did not finish within {DEADLINE} s")
    if errors:
        raise RuntimeError(f"{function} failed: {errors[0]} ({len(errors)} errors)")
    elapsed, cpu = perf_counter() - started, process_time() - cpu_since
    return {"calls/s": calls / elapsed, "cpu us/call": cpu / calls * 1e6}


def _check(value: Any, expected: Any) -> None:
    if value != expected:
        raise RuntimeError(f"wrong result {str(value)[:50]!r}, expected {str(expected)[:50]!r}")


def timed(side: Side, workload: str, sizes: Sizes, broker_pid: int | None) -> dict[str, float]:
    """One run of W1, W2 or W3 on ``side``, with the responder's and the broker's CPU time per call."""
    payload = payload_text(sizes.payload_bytes)
    server_cpu_since = side.server_cpu()
    broker_cpu_since = cpu_seconds(broker_pid) if broker_pid else 0.0
    if side.name in YARDSTICKS:
        raw = side.client
        if workload == "W1":
            total = sizes.seq_calls + sizes.seq_warmup
            found = driver.ping_pong(raw, sizes.seq_calls, sizes.seq_warmup, 1, request_body("add", 1, 2))
        elif workload == "W2":
            total = sizes.pipelined_calls + sizes.pipelined_warmup
            found = driver.ping_pong(
                raw, sizes.pipelined_calls, sizes.pipelined_warmup, sizes.pipelined_in_flight, request_body("add", 1, 2)
            )
        else:
            total = sizes.payload_calls + sizes.payload_warmup
            found = driver.ping_pong(
                raw, sizes.payload_calls, sizes.payload_warmup, sizes.payload_in_flight, request_body("echo", payload)
            )
        metrics = {k: v for k, v in found.items() if k not in ("rounds/s", "cpu us/round")}
        metrics["calls/s"], metrics["cpu us/call"] = found["rounds/s"], found["cpu us/round"]
    elif workload == "W1":
        total = sizes.seq_calls + sizes.seq_warmup
        if side.runner is not None:
            metrics = side.runner.sequential(sizes.seq_calls, sizes.seq_warmup)
        else:
            metrics = sequential(side, sizes.seq_calls, sizes.seq_warmup)
    elif workload == "W2":
        total = sizes.pipelined_calls + sizes.pipelined_warmup
        metrics = _pipelined_of(side)(
            "add",
            lambda i: (i, i),
            lambda i: 2 * i,
            sizes.pipelined_calls,
            sizes.pipelined_warmup,
            sizes.pipelined_in_flight,
        )
    else:
        total = sizes.payload_calls + sizes.payload_warmup
        metrics = _pipelined_of(side)(
            "echo",
            lambda i: (payload,),
            lambda i: payload,
            sizes.payload_calls,
            sizes.payload_warmup,
            sizes.payload_in_flight,
        )
    metrics["server cpu us/call"] = (side.server_cpu() - server_cpu_since) / total * 1e6
    if broker_pid:
        metrics["broker cpu us/call"] = (cpu_seconds(broker_pid) - broker_cpu_since) / total * 1e6
    if workload == "W3":
        calls_per_second = metrics.pop("calls/s")
        metrics = {"MB/s": calls_per_second * sizes.payload_bytes / 1e6, **metrics}
    return metrics


def _pipelined_of(side: Side) -> Callable[..., dict[str, float]]:
    return side.runner.pipelined if side.runner is not None else partial(pipelined, side.client)


def in_flight(url: str, mode: str, sizes: Sizes) -> dict[str, float]:
    """M-inflight: defer ``in_flight_calls`` with no server running, measure, then start it and drain."""
    calls = sizes.in_flight_calls
    service = f"bench_inflight_{mode}_{os.getpid()}"
    with amphora_side(url, mode, service, with_server=False, timeout=MEMORY_TIMEOUT) as side:
        client = side.client
        gevent.sleep(0.5)
        gc.collect()
        before = rss_mib()
        started = perf_counter()
        results = [client.defer.add(i, i) for i in range(calls)]
        deferred = perf_counter() - started
        peak = rss_mib()
        gevent.sleep(2.0)  # the requests are written and confirmed meanwhile: their outbox entries go
        peak = max(peak, rss_mib())
        print(f"  {mode}: {calls:,} calls deferred in {deferred:.1f} s; client {peak:.1f} MiB", file=sys.stderr)
        started = perf_counter()
        side.process = start_server(url, service, mode)
        for i, result in enumerate(results):
            _check(result.get(timeout=DEADLINE), 2 * i)
        drained = perf_counter() - started
        after, server = rss_mib(), rss_mib(side.process.pid)
        del results
        gc.collect()
        released = rss_mib()
    return {
        "client MiB before": before,
        IN_FLIGHT_METRIC: peak,
        "client bytes/call in flight": (peak - before) * 2**20 / calls,
        "defer calls/s": calls / deferred,
        "drain calls/s": calls / drained,
        "client MiB, all answered": after,
        "client MiB, results dropped": released,
        "server MiB, all answered": server,
    }


def in_flight_alone(url: str, mode: str, sizes: Sizes) -> dict[str, float]:
    """M-inflight in a new client process (``bench/rpc_inflight.py``)."""
    command = [sys.executable, "-m", "bench.rpc_inflight", url, mode, str(sizes.in_flight_calls)]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, timeout=MEMORY_TIMEOUT)
    return json.loads(done.stdout)


def long_run(url: str, mode: str, sizes: Sizes) -> dict[str, float]:
    """M-long: ``memory_calls`` calls, 100 in flight; client and server RSS at 0, 10, 50 and 100%."""
    calls = sizes.memory_calls
    marks = {max(1, int(calls * f)): f"{f:.0%}" for f in (0.1, 0.5, 1.0)}
    samples: dict[str, float] = {}
    with amphora_side(url, mode, f"bench_long_{mode}_{os.getpid()}", timeout=MEMORY_TIMEOUT) as side:
        pid = side.process.pid  # type: ignore[union-attr]

        def sample(label: str) -> None:
            samples[f"client MiB at {label}"] = rss_mib()
            samples[f"server MiB at {label}"] = rss_mib(pid)

        def on_progress(settled: int) -> None:
            label = marks.get(settled)
            if label is not None:
                sample(label)
                print(f"  {mode}: {settled:,}/{calls:,} calls", file=sys.stderr, flush=True)

        sample("0%")
        found = pipelined(
            side.client, "add", lambda i: (i, i), lambda i: 2 * i, calls, 0, sizes.memory_in_flight, on_progress
        )
    ordered = {k: samples[k] for who in ("client", "server") for k in samples if k.startswith(who)}
    return {**ordered, "calls/s": found["calls/s"]}


# --- running and reporting -------------------------------------------------------------------------


def columns_of(modes: list[str], kinds: Sequence[str]) -> list[str]:
    """The yardsticks, the modes (the gevent client) and each mode's column of each other client kind."""
    return [*YARDSTICKS, *modes, *(runtimes.column(mode, kind) for mode in modes for kind in kinds)]


def run(
    url: str, modes: list[str], workloads: list[str], runs: int, sizes: Sizes, kinds: list[str]
) -> tuple[dict, list[str]]:
    """results[column][workload] = [metrics of each run] (columns: :func:`columns_of`), and the errors.

    A failure ends the timed runs (W1-W3) but keeps what they measured; a failed memory workload is
    reported and the next one runs (the gevent client's only).
    """
    columns = columns_of(modes, kinds)
    results: dict[str, dict[str, list[dict[str, float]]]] = {c: {w: [] for w in workloads} for c in columns}
    errors: list[str] = []
    timed_workloads = [w for w in workloads if w in TIMED]
    if timed_workloads:
        try:
            _run_timed(url, modes, timed_workloads, runs, sizes, results, kinds)
        except Exception as exc:  # noqa: BLE001 -- whatever failed, keep and print what was measured
            errors.append(_report_failure("the timed runs", exc))
    for workload in (w for w in workloads if w in MEMORY):
        for mode in modes:
            print(f"{workload} {mode}...", file=sys.stderr, flush=True)
            gc.collect()
            try:
                metrics = (in_flight_alone if workload == "M-inflight" else long_run)(url, mode, sizes)
            except Exception as exc:  # noqa: BLE001 -- the next memory workload may still run
                errors.append(_report_failure(f"{workload} {mode}", exc))
                continue
            results[mode][workload].append(metrics)
            _progress("once", mode, workload, metrics)
    return results, errors


def _run_timed(
    url: str, modes: list[str], workloads: list[str], runs: int, sizes: Sizes, results: dict, kinds: list[str]
) -> None:
    columns = columns_of(modes, kinds)
    with contextlib.ExitStack() as stack:
        sides = {name: stack.enter_context(yardstick_side(url, name)) for name in YARDSTICKS}
        for mode in modes:
            sides[mode] = stack.enter_context(amphora_side(url, mode, f"bench_rpc_{mode}_{os.getpid()}"))
            for kind in kinds:
                service = f"bench_rpc_{mode}_{kind}_{os.getpid()}"
                sides[runtimes.column(mode, kind)] = stack.enter_context(runtime_side(url, mode, kind, service))
        broker_pid = listening_pid(url)
        print(f"warming up (broker pid {broker_pid})...", file=sys.stderr, flush=True)
        for side in sides.values():  # an untimed pass: broker queues, caches, allocators
            for workload in workloads:
                timed(side, workload, QUICK, broker_pid)
        for run_number in range(1, runs + 1):
            rotation = run_number % len(columns)
            for column in columns[rotation:] + columns[:rotation]:  # no side always first
                for workload in workloads:
                    gc.collect()
                    metrics = timed(sides[column], workload, sizes, broker_pid)
                    results[column][workload].append(metrics)
                    _progress(f"run {run_number}/{runs}", column, workload, metrics)


def _report_failure(what: str, exc: Exception) -> str:
    traceback.print_exc()
    message = f"{what} failed: {exc!r}"
    print(message, file=sys.stderr, flush=True)
    return message


def _progress(when: str, column: str, workload: str, metrics: dict[str, float]) -> None:
    shown = "  ".join(f"{k} {number(v)}" for k, v in metrics.items())
    print(f"{when}  {column:9} {workload:10} {shown}", file=sys.stderr, flush=True)


def ratio_pairs(modes: list[str], kinds: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The (numerator, denominator) columns of the ratios: the floor and each mode to raw (the targets are on
    mode/raw), then each mode to the floor (what the library costs beyond the protocol), then each other
    client's column to its mode's gevent client."""
    others = [(runtimes.column(mode, kind), mode) for mode in modes for kind in kinds]
    return [(FLOOR, RAW), *((mode, RAW) for mode in modes), *((mode, FLOOR) for mode in modes), *others]


def target_of(top: str, bottom: str, workload: str, metric: str) -> tuple[str, float] | None:
    """The target of the ratio top/bottom for that metric, if any."""
    if bottom == RAW:
        return TARGETS.get((top, workload, metric))
    mode, kind = runtimes.split_column(top)
    return runtimes.TARGETS.get((kind, workload, metric)) if kind is not None and bottom == mode else None


def summarize(results: dict, modes: list[str], sizes: Sizes, kinds: Sequence[str] = ()) -> tuple[dict, dict, dict]:
    """Medians, the ratios of :func:`ratio_pairs` of every median, and the verdict on every target."""
    found = medians(results)
    ratios = {
        f"{top}/{bottom}": {
            workload: {
                metric: value / found[bottom][workload][metric]
                for metric, value in metrics.items()
                if metric in found[bottom][workload]
            }
            for workload, metrics in found[top].items()
            if workload in found[bottom]
        }
        for top, bottom in ratio_pairs(modes, kinds)
    }
    verdicts = {}
    for top, bottom in ratio_pairs(modes, kinds):
        for workload, metrics in ratios[f"{top}/{bottom}"].items():
            for metric, ratio in metrics.items():
                target = target_of(top, bottom, workload, metric)
                if target is not None:
                    sense, limit = target
                    verdicts[f"{top} {workload} {metric} {sense} {limit}x {bottom}"] = {
                        "value": ratio,
                        "met": _met(ratio, sense, limit),
                    }
    for mode in modes:
        value = found[mode].get("M-inflight", {}).get(IN_FLIGHT_METRIC)
        if value is not None and sizes.in_flight_calls >= IN_FLIGHT_TARGET_CALLS:
            verdicts[f"{mode} client RSS with {sizes.in_flight_calls:,} in flight < {IN_FLIGHT_TARGET_MIB:.0f} MiB"] = {
                "value": value,
                "met": value < IN_FLIGHT_TARGET_MIB,
            }
    return found, ratios, verdicts


def _met(value: float, sense: str, limit: float) -> bool:
    return value >= limit if sense == ">=" else value <= limit


def table(
    found: dict, ratios: dict, modes: list[str], workloads: list[str], sizes: Sizes, kinds: Sequence[str] = ()
) -> str:
    columns = columns_of(modes, kinds)
    header = ["workload", "metric", *columns, *ratios]
    rows = []
    for workload in workloads:
        metrics: list[str] = []
        for column in columns:
            metrics += [m for m in found[column].get(workload, {}) if m not in metrics]
        for metric in metrics:
            cells = [
                number(found[c][workload][metric]) if metric in found[c].get(workload, {}) else "-" for c in columns
            ]
            for (top, bottom), ratio in zip(ratio_pairs(modes, kinds), ratios.values(), strict=True):
                value = ratio.get(workload, {}).get(metric)
                cell = "" if value is None else f"{value:.2f}"
                target = target_of(top, bottom, workload, metric)
                if target is not None and value is not None:
                    sense, limit = target
                    cell += f" [{sense}{limit:.2f} {'met' if _met(value, sense, limit) else 'MISSED'}]"
                if workload == "M-inflight" and metric == IN_FLIGHT_METRIC and bottom == RAW:
                    cell = _in_flight_cell(found[top].get(workload, {}).get(metric), sizes)
                cells.append(cell)
            rows.append([workload, metric, *cells])
    return render(header, rows)


def _in_flight_cell(value: float | None, sizes: Sizes) -> str:
    if value is None:
        return ""
    if sizes.in_flight_calls < IN_FLIGHT_TARGET_CALLS:
        return f"[<{IN_FLIGHT_TARGET_MIB:.0f} MiB at {IN_FLIGHT_TARGET_CALLS:,}: n/a]"
    return f"[<{IN_FLIGHT_TARGET_MIB:.0f} MiB {'met' if value < IN_FLIGHT_TARGET_MIB else 'MISSED'}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc", description=__doc__.split("\n")[0])
    add_run_options(parser, "runs of W1-W3 (default 5, or 1 with --quick); M-* run once")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated (default: all)")
    parser.add_argument(
        "--clients", default="", help=f"other clients to time beside the gevent one: {','.join(runtimes.CLIENTS)}"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default: all)")
    parser.add_argument(
        "--memory-calls", type=int, metavar="N", help="calls of M-long (default 200,000, or 20,000 with --quick)"
    )
    args = parser.parse_args(argv)
    modes, workloads = args.modes.split(","), args.workloads.split(",")
    kinds = [kind for kind in args.clients.split(",") if kind]
    for kind in kinds:
        if kind not in runtimes.CLIENTS:
            parser.error(f"unknown client {kind!r}: choose from {', '.join(runtimes.CLIENTS)}")
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
    for workload in workloads:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}: choose from {', '.join(WORKLOADS)}")
    workloads = [w for w in WORKLOADS if w in workloads]
    sizes = QUICK if args.quick else Sizes()
    if args.memory_calls:
        sizes = dataclasses.replace(sizes, memory_calls=args.memory_calls)
    runs = args.runs or (1 if args.quick else 5)

    load_before = os.getloadavg()[0]
    with broker(args.url) as url:
        results, errors = run(url, modes, workloads, runs, sizes, kinds)
    found, ratios, verdicts = summarize(results, modes, sizes, kinds)
    env = {**environment(), "load average (1 min) before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"}
    print(f"\nmedians of {runs} run(s) (M-* once); " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(table(found, ratios, modes, workloads, sizes, kinds))
    print("ratios: above 1 is better for calls/s and MB/s, below 1 for us (latency, CPU); the targets are on x/raw")
    missed = [name for name, verdict in verdicts.items() if not verdict["met"]]
    print(
        f"targets: {len(verdicts) - len(missed)} of {len(verdicts)} met"
        + (f"; missed: {'; '.join(missed)}" if missed else "")
    )
    if args.json:
        with open(args.json, "w") as f:
            report = {"environment": env, "runs": runs, "sizes": dataclasses.asdict(sizes), "modes": modes}
            measured = {"medians": found, "ratios": ratios, "targets": verdicts, "results": results, "errors": errors}
            json.dump({**report, **measured}, f, indent=2)
    if errors:
        print(f"FAILED, so some results are missing: {'; '.join(errors)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
