"""The workloads, written once against the client interface of :mod:`bench.clients`.

Each workload is callback-driven: it primes the pipeline from the calling greenlet, then every
confirmation or reply (delivered in whatever greenlet the library uses) triggers the next publish, so
no library pays for a greenlet switch per message that it would not pay in a real application. The
calling greenlet only waits for the end.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from time import perf_counter, process_time
from typing import Any

from gevent import subprocess
from gevent.event import Event

BODY = bytes(range(256))  # 256-byte body for every message
DEADLINE = 300.0  # seconds any one run may take before the benchmark gives up


@dataclass(frozen=True)
class Sizes:
    confirm_messages: int = 50_000
    confirm_window: int = 1_000
    rtt_seq_rounds: int = 2_000
    rtt_seq_warmup: int = 200
    rtt_100_rounds: int = 20_000
    rtt_100_warmup: int = 1_000
    rtt_100_in_flight: int = 100


QUICK = Sizes(confirm_messages=10_000, rtt_seq_rounds=500, rtt_seq_warmup=50, rtt_100_rounds=5_000, rtt_100_warmup=200)


def _wait(done: Event, errors: list[str], what: str) -> None:
    if not done.wait(DEADLINE):
        raise RuntimeError(f"{what} did not finish within {DEADLINE} s")
    if errors:
        raise RuntimeError(f"{what} failed: {errors[0]} ({len(errors)} errors)")


def confirm(client: Any, sizes: Sizes) -> dict[str, float]:
    """W-confirm: publish ``confirm_messages`` with at most ``confirm_window`` unconfirmed; msgs/s."""
    client.purge()
    total, window = sizes.confirm_messages, sizes.confirm_window
    publish = client.publish_confirmed
    sent = settled = 0
    done, errors = Event(), []

    def pump() -> None:
        nonlocal sent
        while sent < total and sent - settled < window:
            sent += 1
            publish(BODY)

    def on_confirmed(count: int, ok: bool) -> None:
        nonlocal settled
        settled += count
        if not ok:
            errors.append("the broker nacked a publish")
        if settled >= total:
            done.set()
        else:
            pump()

    client.on_confirmed = on_confirmed
    started, cpu_started = perf_counter(), process_time()
    pump()
    _wait(done, errors, "W-confirm")
    elapsed, cpu = perf_counter() - started, process_time() - cpu_started
    client.purge()  # leave no backlog in the broker for the next workload
    if settled != total:
        raise RuntimeError(f"W-confirm: {settled} confirmations for {total} publishes")
    return {"msgs/s": total / elapsed, "cpu us/msg": cpu / total * 1e6}


def ping_pong(client: Any, rounds: int, warmup: int, in_flight: int, body: bytes = BODY) -> dict[str, float]:
    """Request/reply through the echo process with ``in_flight`` outstanding requests of ``body``.

    Returns rounds/s over the ``rounds`` replies after the first ``warmup`` and the client process's
    CPU time per round; with one in flight, also the p50 and p99 round trip in microseconds.
    """
    total = warmup + rounds
    sent = received = 0
    started_at: dict[str, float] = {}
    latencies: list[float] = []
    measuring_since = cpu_since = 0.0
    done, errors = Event(), []
    request = client.request

    def send() -> None:
        nonlocal sent
        correlation_id = str(sent)
        sent += 1
        started_at[correlation_id] = perf_counter()
        request(correlation_id, body)

    def on_reply(correlation_id: str, reply: bytes) -> None:
        nonlocal received, measuring_since, cpu_since
        now = perf_counter()
        started = started_at.pop(correlation_id, None)
        if started is None or reply != body:
            errors.append(f"unexpected reply {correlation_id!r} ({len(reply)} bytes)")
            done.set()
            return
        received += 1
        if received > warmup:
            latencies.append(now - started)
        elif received == warmup:
            measuring_since, cpu_since = now, process_time()
        if sent < total:
            send()
        elif received == total:
            done.set()

    client.on_reply = on_reply
    measuring_since, cpu_since = perf_counter(), process_time()  # unless warmup > 0 resets them
    for _ in range(min(in_flight, total)):
        send()
    _wait(done, errors, f"ping-pong with {in_flight} in flight")
    elapsed, cpu = perf_counter() - measuring_since, process_time() - cpu_since
    result = {"rounds/s": rounds / elapsed, "cpu us/round": cpu / rounds * 1e6}
    if in_flight == 1:
        quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
        result = {"p50 us": quantiles[49] * 1e6, "p99 us": quantiles[98] * 1e6, **result}
    return result


WORKLOADS = {
    "W-confirm": confirm,
    "W-rtt-seq": lambda client, sizes: ping_pong(client, sizes.rtt_seq_rounds, sizes.rtt_seq_warmup, 1),
    "W-rtt-100": lambda client, sizes: ping_pong(
        client, sizes.rtt_100_rounds, sizes.rtt_100_warmup, sizes.rtt_100_in_flight
    ),
}


def start_echo(client_name: str, url: str, queue: str) -> subprocess.Popen:
    """Start the responder process for ``client_name`` and wait until it consumes ``queue``."""
    return start_process("bench.echo", client_name, url, queue, what=f"the {client_name} echo process")


def start_process(module: str, *args: str, what: str) -> subprocess.Popen:
    """Run ``python -m module args...`` and wait until it prints ``ready`` (it exits when its stdin closes)."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"{what} did not start (exit code {process.wait()})")
    return process


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Close the stdin of a responder process (``bench.echo``, ``bench.rpc_server``): it exits on EOF."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
