"""Long polling at scale: one web-tier process polling for N users, a backend pushing a message to each.

``python -m bench.longpoll [--users 1000,10000] [--rounds 5] [--url URL] [--json FILE]``

For each user count, on a private RabbitMQ node (unless ``--url``): the web tier (``bench.longpoll_web``,
the pattern of examples/longpoll: per poll ``create_new_request_queue(user)`` then
``receive_from_queue(user, max_calls=1)``) polls for every user; this process is the backend: each round it
defers one ``show_message(user, text)`` to every user at once, routed by user with ``tune_function``, and
starts the next round once every call ended. Reported per user count: poll cycles per second (messages
handled / push time), push -> handler p50 and p99, the calls' outcomes, messages handled more than once,
and the web tier's peak RSS, with the issue's targets (10,000 users: every message handled once, none
expired, p99 <= 5 s, RSS <= 300 MB; 1,000 users: p99 <= 1 s, >= 3,000 cycles/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from typing import Any

from gevent import subprocess

from amphora import AmqpRpcClient
from bench.common import broker, environment, render
from bench.driver import start_process

CALL_TIMEOUT = 30.0
WEB_TIER_STOP_TIMEOUT = 60.0
TARGETS = {1000: {"p99": 1.0, "cycles": 3000.0}, 10000: {"p99": 5.0, "rss": 300.0}}


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted ``values`` lie (0 if there are none)."""
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else 0.0


def push_rounds(client: AmqpRpcClient, users: int, rounds: int) -> tuple[Counter[str], float]:
    """Each round, one message to every user at once; the calls' outcomes and the seconds it all took."""
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    for round_number in range(rounds):
        results = [
            client.defer.show_message(f"u{user}", f"{round_number}:{user} {time.time()}") for user in range(users)
        ]
        for result in results:
            try:
                outcomes["ok" if result.get() is not None else "not shown"] += 1
            except Exception as exc:  # counted by type: the report says which
                outcomes[type(exc).__name__] += 1
    return outcomes, time.monotonic() - started


def stop_web_tier(web: subprocess.Popen) -> dict[str, Any]:
    """SIGTERM the web tier and read its report; a web tier that does not answer is killed and said hung."""
    web.terminate()
    try:
        output, _ = web.communicate(timeout=WEB_TIER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        web.kill()
        web.wait()
        return {"hung": True}
    lines = output.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"hung": True}


def measure(url: str, users: int, rounds: int) -> dict[str, Any]:
    service = f"bench_longpoll_{uuid.uuid4().hex[:8]}"
    print(f"{users} users: starting the web tier", file=sys.stderr, flush=True)
    web = start_process("bench.longpoll_web", url, service, str(users), what="the web tier")
    # as examples/longpoll/core.py: transient messages (persisting one per user queue costs 3.5x, docs/longpolling.rst)
    client = AmqpRpcClient(service, url=url, timeout=CALL_TIMEOUT, reply_queue_expires=60, persistent=False)
    client.tune_function("show_message", lambda args, kwargs: str(args[0]))
    try:
        print(f"{users} users: pushing {rounds} round(s)", file=sys.stderr, flush=True)
        outcomes, seconds = push_rounds(client, users, rounds)
    finally:
        client.stop()
        report = stop_web_tier(web)
    delays = report.pop("delays", [])
    pushed = users * rounds
    return {
        "users": users,
        "pushed": pushed,
        "outcomes": dict(outcomes),
        "handled": report.get("handled", 0),
        "handled_more_than_once": report.get("handled_more_than_once", 0),
        "cycles_per_s": report.get("handled", 0) / seconds if seconds else 0.0,
        "p50_s": percentile(delays, 0.5),
        "p99_s": percentile(delays, 0.99),
        "peak_rss_mib": report.get("peak_rss_mib", 0.0),
        "web_tier_hung": bool(report.get("hung")),
        "seconds": seconds,
    }


def verdicts(result: dict[str, Any]) -> list[str]:
    """The issue's targets for this user count, each met or missed."""
    target = TARGETS.get(result["users"], {})
    checks = {
        "all handled once": result["handled"] == result["pushed"] and not result["handled_more_than_once"],
        "none expired": not result["outcomes"].get("RequestExpired"),
    }
    if "p99" in target:
        checks[f"p99 <= {target['p99']:g} s"] = result["p99_s"] <= target["p99"]
    if "cycles" in target:
        checks[f">= {target['cycles']:,.0f} cycles/s"] = result["cycles_per_s"] >= target["cycles"]
    if "rss" in target:
        checks[f"RSS <= {target['rss']:.0f} MB"] = result["peak_rss_mib"] <= target["rss"]
    return [f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.longpoll", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="use this broker instead of starting a private node")
    parser.add_argument("--users", default="1000,10000", help="comma-separated user counts (default 1000,10000)")
    parser.add_argument("--rounds", type=int, default=5, help="messages pushed to each user (default 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.users.split(",")]
    results = []
    with broker(args.url) as url:
        for users in counts:
            results.append(measure(url, users, args.rounds))
    header = ["users", "pushed", "outcomes", "handled", ">1x", "cycles/s", "p50 s", "p99 s", "RSS MiB", "hung"]
    rows = [
        [
            str(r["users"]),
            str(r["pushed"]),
            " ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items())),
            str(r["handled"]),
            str(r["handled_more_than_once"]),
            f"{r['cycles_per_s']:,.0f}",
            f"{r['p50_s']:.3f}",
            f"{r['p99_s']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
            "yes" if r["web_tier_hung"] else "no",
        ]
        for r in results
    ]
    print(", ".join(f"{k} {v}" for k, v in environment().items()) + f", {args.rounds} round(s)")
    print(render(header, rows, left=1))
    for result in results:
        print(f"{result['users']} users: " + "; ".join(verdicts(result)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(), "rounds": args.rounds, "results": results}, f, indent=2)
    if any(r["web_tier_hung"] or r["handled"] != r["pushed"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
