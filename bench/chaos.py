"""Chaos run: calls at a steady rate while the broker, the servers and the network fail, then a reckoning.

``python -m bench.chaos [--duration 60] [--rate 500] [--seed 1] [--cluster] [--json FILE]``

Two client processes (``bench.chaos_client``) offer ``--rate`` calls per second between them to three server
processes (``bench.chaos_server``) of one service, every connection through its own
:class:`~amphora.testing.faultproxy.FaultProxy`, while at seeded random moments, one after the other:

- the broker is killed with -9 and started again (``--broker-kills``, 3); with ``--cluster``, a random node
  of a three-node cluster, and every queue is a quorum queue;
- a server process is killed with -9 and started again (``--server-kills``, 3);
- the network is cut (connections reset, new ones refused) or stalled (a blackhole that only heartbeats
  detect) for ``--outage`` seconds (``--network-faults``, 3), between the broker and every process or one.

Then it prints the calls issued, answered with the correct result, failed (by error type), lost (neither
answer nor error), the requests executed more than once, and for each fault the time from its end to the
next correct answer in every client. It exits with 1 if a call was lost, answered wrongly or timed out.
Progress goes to stderr, the report to stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import gevent
import gevent.queue
from gevent import subprocess

from amphora.testing import RabbitCluster, RabbitNode
from amphora.testing.faultproxy import FaultProxy
from bench.common import environment, render

WARMUP = 3.0
"""Seconds of calls before the first fault."""
COOLDOWN = 5.0
"""Seconds of calls after the last fault ends (the load runs at least ``--duration`` seconds)."""
ESTIMATED_SECONDS = {"broker": 5.0, "server": 1.5}
"""How long a broker or server kill takes until the restart is ready, to spread the faults over the run."""
START_TIMEOUT = 60.0
RECOVERY_LIMIT = 60.0
"""Seconds to wait, after a fault, for every client to get a correct answer before the next fault."""


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Fault:
    kind: str  # "broker", "server", "network cut", "network stall"
    target: str = ""
    planned_gap: float = 0.0
    start: float = 0.0
    end: float = 0.0
    recovery: float | None = None  # seconds from end until every client had a correct answer again


@dataclasses.dataclass
class Child:
    """A client or server process, its proxies (one per broker node) and its URLs through them."""

    name: str
    proxies: list[FaultProxy]
    urls: list[str]
    process: subprocess.Popen | None = None
    incarnation: int = 0
    last_good: float = 0.0  # a client's latest correct answer, as it reports them
    lines: Any = None  # a client's stdout lines other than "good TIME"


class Broker:
    """One node, or a cluster of three, behind a common interface for the run."""

    def __init__(self, cluster: bool) -> None:
        self.cluster = RabbitCluster() if cluster else None
        self.node = None if cluster else RabbitNode()

    def start(self) -> None:
        if self.cluster is not None:
            self.cluster.start()
        else:
            assert self.node is not None
            self.node.start()

    @property
    def nodes(self) -> list[RabbitNode]:
        return self.cluster.nodes if self.cluster is not None else [self.node]  # type: ignore[list-item]

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        elif self.node is not None:
            self.node.close()


class ChaosRun:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.random = random.Random(options.seed)
        self.queue_type = "quorum" if options.cluster else "classic"
        self.service = f"chaos{uuid.uuid4().hex[:8]}"
        self.directory = tempfile.mkdtemp(prefix="amphora-chaos-")
        self.broker = Broker(options.cluster)
        self.clients: list[Child] = []
        self.servers: list[Child] = []
        self.faults: list[Fault] = []
        self.load_started = 0.0
        self.load_stopped = 0.0

    # --- setting up ----------------------------------------------------------------------------

    def child(self, name: str, index: int) -> Child:
        """Proxies to every node for one process; its URL list starts at a different node per process."""
        nodes = self.broker.nodes
        proxies = [FaultProxy("127.0.0.1", node.port) for node in nodes]
        query = f"heartbeat={self.options.heartbeat}&connection_timeout={self.options.connection_timeout}"
        urls = [f"{proxy.url_for(node.url)}?{query}" for proxy, node in zip(proxies, nodes, strict=True)]
        shift = index % len(urls)
        return Child(name, proxies, urls[shift:] + urls[:shift])

    def spawn(self, child: Child, module: str, *arguments: str, stdin: bool = False) -> None:
        child.incarnation += 1
        stderr = open(os.path.join(self.directory, f"{child.name}.{child.incarnation}.err"), "w")  # noqa: SIM115
        child.process = subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        stderr.close()

    def wait_for(self, child: Child, word: str, timeout: float = START_TIMEOUT) -> None:
        assert child.process is not None and child.process.stdout is not None
        with gevent.Timeout(timeout, RuntimeError(f"{child.name} did not print {word!r} in {timeout} s")):
            line = child.lines.get() if child.lines is not None else child.process.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"{child.name} printed {line!r} instead of {word!r}; see {self.directory}")

    def follow(self, client: Child) -> None:
        """Read a client's stdout: ``good TIME`` lines update ``last_good``, the others are queued."""
        assert client.process is not None and client.process.stdout is not None
        for line in client.process.stdout:
            word, _, value = line.strip().partition(" ")
            if word == "good":
                client.last_good = float(value)
            else:
                client.lines.put(line.strip())
        client.lines.put("")  # end of output

    def wait_for_recovery(self, fault: Fault) -> None:
        """Wait until every client has had a correct answer since the fault ended (at most RECOVERY_LIMIT)."""
        deadline = time.monotonic() + RECOVERY_LIMIT
        while any(c.last_good <= fault.end for c in self.clients) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if any(c.last_good <= fault.end for c in self.clients):
            log(f"no correct answer in every client {RECOVERY_LIMIT:g} s after the fault; going on")
        else:
            waited = max(c.last_good for c in self.clients) - fault.end
            log(f"every client has had a correct answer again {waited:.2f} s after the fault")

    def start_server(self, server: Child) -> None:
        log_path = os.path.join(self.directory, f"{server.name}.{server.incarnation + 1}.executions")
        self.spawn(
            server,
            "bench.chaos_server",
            self.service,
            json.dumps(server.urls),
            log_path,
            "--queue-type",
            self.queue_type,
        )
        self.wait_for(server, "ready")

    def start_client(self, client: Child, rate: float) -> None:
        output = os.path.join(self.directory, f"{client.name}.json")
        self.spawn(
            client,
            "bench.chaos_client",
            self.service,
            json.dumps(client.urls),
            client.name,
            output,
            "--rate",
            str(rate),
            "--timeout",
            str(self.options.timeout),
            "--queue-type",
            self.queue_type,
            stdin=True,
        )
        client.lines = gevent.queue.Queue()
        gevent.spawn(self.follow, client)

    def tell(self, child: Child, command: str) -> None:
        assert child.process is not None and child.process.stdin is not None
        child.process.stdin.write(command + "\n")
        child.process.stdin.flush()

    # --- faults ----------------------------------------------------------------------------------

    def plan(self) -> None:
        """The faults in a random order, with random gaps that spread them over the run."""
        options = self.options
        faults = [Fault("broker") for _ in range(options.broker_kills)]
        faults += [Fault("server") for _ in range(options.server_kills)]
        kinds = ["network cut", "network stall"]
        self.random.shuffle(kinds)  # with two network faults or more, both kinds happen
        faults += [Fault(kinds[i % 2]) for i in range(options.network_faults)]
        self.random.shuffle(faults)
        estimated = sum(ESTIMATED_SECONDS.get(f.kind, options.outage) for f in faults)
        slack = max(0.0, options.duration - WARMUP - COOLDOWN - estimated)
        weights = [self.random.random() for _ in faults]
        total = sum(weights) or 1.0
        for fault, weight in zip(faults, weights, strict=True):
            fault.planned_gap = max(1.0, slack * weight / total)
            if fault.kind == "broker" and options.cluster:
                fault.target = f"node {self.random.randrange(len(self.broker.nodes))}"
            elif fault.kind == "broker":
                fault.target = "node"
            elif fault.kind == "server":
                fault.target = self.random.choice(self.servers).name
            else:
                children = self.clients + self.servers
                fault.target = self.random.choice(["all", "all", *(c.name for c in children)])
        self.faults = faults

    def inject(self, fault: Fault) -> None:
        options = self.options
        fault.start = time.time()
        log(f"fault: {fault.kind} {fault.target}")
        if fault.kind == "broker":
            index = int(fault.target.split()[-1]) if options.cluster else 0
            node = self.broker.nodes[index]
            node.kill()
            node.start()
        elif fault.kind == "server":
            server = next(s for s in self.servers if s.name == fault.target)
            assert server.process is not None
            server.process.kill()
            server.process.wait()
            self.start_server(server)
        else:
            children = self.clients + self.servers
            proxies = [p for c in children if fault.target in ("all", c.name) for p in c.proxies]
            if fault.kind == "network cut":
                for proxy in proxies:
                    proxy.refuse()
                    proxy.cut()
                gevent.sleep(options.outage)
                for proxy in proxies:
                    proxy.accept()
            else:
                for proxy in proxies:
                    proxy.stall()
                gevent.sleep(options.outage)
                for proxy in proxies:
                    proxy.resume()
        fault.end = time.time()
        log(f"fault over after {fault.end - fault.start:.1f} s")

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        options = self.options
        log(f"starting {'a three-node cluster' if options.cluster else 'a broker node'}; files in {self.directory}")
        self.broker.start()
        self.servers = [self.child(f"server-{i}", i) for i in range(options.servers)]
        self.clients = [self.child(f"client-{i}", options.servers + i) for i in range(options.clients)]
        gevent.joinall([gevent.spawn(self.start_server, s) for s in self.servers], raise_error=True)
        for client in self.clients:
            self.start_client(client, options.rate / options.clients)
        for client in self.clients:
            self.wait_for(client, "ready")
        self.plan()
        log(f"{options.rate:g} calls/s for at least {options.duration:g} s; {len(self.faults)} faults")
        self.load_started = time.time()
        for client in self.clients:
            self.tell(client, "go")
        gevent.sleep(WARMUP)
        for fault in self.faults:
            gevent.sleep(fault.planned_gap)
            self.inject(fault)
            self.wait_for_recovery(fault)  # so that the next fault's effects are not counted against this one
        gevent.sleep(max(COOLDOWN, self.load_started + options.duration - time.time()))
        for client in self.clients:
            self.tell(client, "stop")
        self.load_stopped = time.time()
        log(f"load stopped after {self.load_stopped - self.load_started:.1f} s; waiting for the last calls")
        for client in self.clients:
            self.wait_for(client, "done", timeout=options.timeout + 60)
        return self.reckon()

    def reckon(self) -> dict[str, Any]:
        reports = []
        for client in self.clients:
            with open(os.path.join(self.directory, f"{client.name}.json")) as report_file:
                reports.append(json.load(report_file))
        executions: collections.Counter[tuple[str, int]] = collections.Counter()
        for name in os.listdir(self.directory):
            if name.endswith(".executions"):
                with open(os.path.join(self.directory, name)) as log_file:
                    for line in log_file:
                        tag, n = line.split()
                        executions[(tag, int(n))] += 1
        errors: collections.Counter[str] = collections.Counter()
        never_executed_errors = 0
        for report in reports:
            for error, numbers in report["errors"].items():
                errors[error] += len(numbers)
                never_executed_errors += sum((report["tag"], n) not in executions for n in numbers)
        for fault in self.faults:
            waits = []
            for report in reports:
                after = next((t for t in report["good"] if t > fault.end), None)
                waits.append(None if after is None else after - fault.end)
            fault.recovery = None if None in waits else max(w for w in waits if w is not None)
        issued = sum(r["issued"] for r in reports)
        answered_unexecuted = 0
        for r in reports:
            unanswered = set(r["lost"]).union(*r["errors"].values(), (n for n, _ in r["wrong"]))
            answered_unexecuted += sum(
                1 for n in range(r["issued"]) if n not in unanswered and (r["tag"], n) not in executions
            )
        recoveries = [f for f in self.faults if f.recovery is not None]
        worst = max(recoveries, key=lambda f: f.recovery or 0.0, default=None)
        return {
            "options": vars(self.options),
            "environment": environment(),
            "load_seconds": self.load_stopped - self.load_started,
            "issued": issued,
            "ok": sum(r["ok"] for r in reports),
            "wrong": sum(len(r["wrong"]) for r in reports),
            "wrong_examples": [w for r in reports for w in r["wrong"]][:5],
            "errors": dict(errors),
            "errors_never_executed": never_executed_errors,
            "lost": sum(len(r["lost"]) for r in reports),
            "lost_examples": [(r["tag"], n) for r in reports for n in r["lost"]][:5],
            "slowest_answer": max(r["slowest"] for r in reports),
            "executed": sum(executions.values()),
            "executed_twice_or_more": sum(1 for count in executions.values() if count > 1),
            "most_executions": max(executions.values(), default=0),
            "answered_but_never_executed": answered_unexecuted,
            "faults": [
                {**dataclasses.asdict(f), "start": f.start - self.load_started, "end": f.end - self.load_started}
                for f in self.faults
            ],
            "unrecovered_faults": sum(f.recovery is None for f in self.faults),
            "longest_recovery": None if worst is None else worst.recovery,
            "longest_recovery_fault": None if worst is None else f"{worst.kind} {worst.target}".strip(),
        }

    def close(self) -> None:
        for child in self.servers + self.clients:
            if child.process is not None and child.process.poll() is None:
                child.process.kill()
                child.process.wait()
            for proxy in child.proxies:
                proxy.close()
        self.broker.close()
        if self.options.keep:
            log(f"kept the run's files in {self.directory}")
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


def verdict(result: dict[str, Any]) -> list[str]:
    """What makes the run fail: lost, wrong or timed-out calls, answers nobody executed, no recovery."""
    problems = []
    if result["lost"]:
        problems.append(f"{result['lost']} call(s) lost")
    if result["wrong"]:
        problems.append(f"{result['wrong']} wrong answer(s)")
    if result["errors"].get("NoResult"):
        problems.append(f"{result['errors']['NoResult']} call(s) timed out (a request or reply went missing)")
    if result["answered_but_never_executed"]:
        problems.append(f"{result['answered_but_never_executed']} answer(s) to requests no server logged")
    if result["unrecovered_faults"]:
        problems.append(f"{result['unrecovered_faults']} fault(s) never followed by a correct answer in every client")
    return problems


def report(result: dict[str, Any]) -> str:
    options = result["options"]
    broker = "a three-node cluster, quorum queues" if options["cluster"] else "one broker node, classic queues"
    lines = [
        f"chaos run: seed {options['seed']}, {options['rate']:g} calls/s offered for {result['load_seconds']:.0f} s"
        f" by {options['clients']} clients to {options['servers']} servers; {broker};"
        f" heartbeat {options['heartbeat']} s, call timeout {options['timeout']:g} s",
        "environment: " + ", ".join(f"{k} {v}" for k, v in result["environment"].items()),
        "",
    ]
    fault_rows = [
        [
            str(i + 1),
            f["kind"],
            f["target"],
            f"{f['start']:.1f}",
            f"{f['end'] - f['start']:.1f}",
            "never" if f["recovery"] is None else f"{f['recovery']:.2f}",
        ]
        for i, f in enumerate(result["faults"])
    ]
    lines.append(render(["#", "fault", "target", "at s", "lasted s", "to next good reply s"], fault_rows, left=3))
    lines.append("")
    errors = ", ".join(f"{name} {count:,}" for name, count in sorted(result["errors"].items())) or "none"
    longest = (
        "-"
        if result["longest_recovery"] is None
        else f"{result['longest_recovery']:.2f} s ({result['longest_recovery_fault']})"
    )
    rows = [
        ["calls issued", f"{result['issued']:,}"],
        ["answered with the correct result", f"{result['ok']:,}"],
        ["answered with a wrong result", f"{result['wrong']:,}"],
        ["failed with an error", f"{sum(result['errors'].values()):,} ({errors})"],
        ["lost (no answer and no error)", f"{result['lost']:,}"],
        ["requests executed more than once", f"{result['executed_twice_or_more']:,}"],
        ["most executions of one request", f"{result['most_executions']:,}"],
        ["executions in all", f"{result['executed']:,}"],
        ["longest fault end -> next good reply", longest],
        ["slowest correct answer", f"{result['slowest_answer']:.2f} s"],
    ]
    width = max(len(label) for label, _ in rows)
    lines.extend(f"{label.ljust(width)}  {value}" for label, value in rows)
    problems = verdict(result)
    lines.append("")
    lines.append("verdict: " + ("FAILED: " + "; ".join(problems) if problems else "passed"))
    return "\n".join(lines)


def parse(arguments: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load, at least (default 60)")
    parser.add_argument("--rate", type=float, default=500.0, help="calls per second offered in all (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    parser.add_argument("--cluster", action="store_true", help="a three-node cluster and quorum queues")
    parser.add_argument("--broker-kills", type=int, default=3, help="kill -9 and restart the broker (default 3)")
    parser.add_argument("--server-kills", type=int, default=3, help="kill -9 and restart a server (default 3)")
    parser.add_argument("--network-faults", type=int, default=3, help="network cuts or stalls (default 3)")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds a network fault lasts (default 10)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--servers", type=int, default=3, help="server processes (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="timeout of every call (default 60)")
    parser.add_argument("--heartbeat", type=int, default=2, help="heartbeat of every connection, s (default 2)")
    parser.add_argument("--connection-timeout", type=float, default=5.0, help="connection timeout, s (default 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, executions)")
    options = parser.parse_args(arguments)
    if options.clients < 1 or options.servers < 1 or options.rate <= 0 or options.duration <= 0:
        parser.error("--clients, --servers, --rate and --duration must be positive")
    return options


@contextlib.contextmanager
def chaos_run(options: argparse.Namespace) -> Iterator[ChaosRun]:
    run = ChaosRun(options)
    try:
        yield run
    finally:
        run.close()


def main(arguments: Sequence[str] | None = None) -> int:
    options = parse(arguments)
    with chaos_run(options) as run:
        result = run.run()
    print(report(result), flush=True)
    if options.json:
        with open(options.json, "w") as output:
            json.dump(result, output, indent=2)
    return 1 if verdict(result) else 0


if __name__ == "__main__":
    sys.exit(main())
