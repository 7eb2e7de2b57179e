"""A client of the chaos run (``bench.chaos``), in its own process.

``python -m bench.chaos_client SERVICE URLS_JSON TAG OUTPUT --rate R [--timeout T] [--queue-type quorum]``

It prints ``ready`` once its client is connected, waits for ``go`` on stdin, then defers
``work(TAG, n)`` for n = 0, 1, 2... at ``--rate`` calls per second (open loop: on schedule, whether or not
earlier calls were answered) until ``stop`` comes on stdin. Meanwhile it prints ``good TIME``, the time of
its latest correct answer, at most every 0.2 s. Then it waits for every call to end, at most
``--timeout`` + 15 s, and writes OUTPUT (JSON):

- ``issued``, ``ok`` (answered ``[TAG, n, n * n]``), ``wrong`` (``[n, value]`` of other answers),
  ``errors`` (exception type -> the n of each call that failed with it), ``lost`` (the n of calls with
  neither an answer nor an error when the wait ended);
- ``good`` (the wall-clock time of every correct answer, sorted), ``slowest`` (the longest time a call took
  to get its correct answer), ``started`` and ``stopped`` (when the issuing began and ended).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.fileobject import FileObjectThread

from amphora import AmqpRpcClient

TICK = 0.01
"""Seconds between two batches of calls."""
REPORT_EVERY = 0.2
"""Seconds between two ``good TIME`` lines (the time of the latest correct answer) on stdout."""
DRAIN_MARGIN = 15.0
"""Seconds past the call timeout to wait for the last calls to end before counting them as lost."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service")
    parser.add_argument("urls", help="a JSON list of broker URLs")
    parser.add_argument("tag")
    parser.add_argument("output")
    parser.add_argument("--rate", type=float, required=True, help="calls per second")
    parser.add_argument("--timeout", type=float, default=60.0, help="timeout of each call (s)")
    parser.add_argument("--queue-type", default="classic", choices=("classic", "quorum"))
    options = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s client %(process)d %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("amphora.link").setLevel(logging.INFO)  # reconnections, for the run's record
    client = AmqpRpcClient(
        options.service, urls=json.loads(options.urls), timeout=options.timeout, queue_type=options.queue_type
    )
    tag = options.tag
    outcomes: dict[str, Any] = {"ok": 0, "wrong": [], "errors": {}, "good": [], "slowest": 0.0}
    pending: dict[int, AsyncResult] = {}

    issued_at: list[float] = []

    def on_done(n: int, result: AsyncResult) -> None:
        pending.pop(n, None)
        if result.successful():
            if result.value == [tag, n, n * n]:
                outcomes["ok"] += 1
                now = time.time()
                outcomes["good"].append(now)
                outcomes["slowest"] = max(outcomes["slowest"], now - issued_at[n])
            else:
                outcomes["wrong"].append([n, result.value])
        else:
            outcomes["errors"].setdefault(type(result.exception).__name__, []).append(n)

    commands = FileObjectThread(sys.stdin, "r")  # reading stdin must not block the hub (heartbeats)
    print("ready", flush=True)
    if commands.readline().strip() != "go":
        return
    stop = gevent.spawn(commands.readline)
    issued = 0
    started = time.time()
    reported = 0.0
    while not stop.ready():
        if outcomes["good"] and outcomes["good"][-1] > reported and time.time() > reported + REPORT_EVERY:
            reported = outcomes["good"][-1]
            print(f"good {reported}", flush=True)  # tells bench.chaos that calls succeed again
        due = int((time.time() - started) * options.rate) + 1
        while issued < due:
            n = issued
            issued_at.append(time.time())
            result = client.defer.work(tag, n)
            pending[n] = result
            result.rawlink(lambda r, n=n: on_done(n, r))
            issued += 1
        gevent.sleep(TICK)
    stopped = time.time()
    deadline = time.monotonic() + options.timeout + DRAIN_MARGIN
    while pending and time.monotonic() < deadline:
        gevent.sleep(0.1)
    report = {
        "tag": tag,
        "issued": issued,
        "started": started,
        "stopped": stopped,
        "lost": sorted(pending),
        **outcomes,
    }
    report["good"].sort()
    with open(options.output, "w") as output:
        json.dump(report, output)
    client.stop()
    print("done", flush=True)


if __name__ == "__main__":
    main()
