"""The web tier of ``bench.longpoll``: one process long-polling for USERS users, as examples/longpoll does.

``python -m bench.longpoll_web URL SERVICE USERS``

It runs the example's :class:`LongPollApi` without HTTP: one greenlet per user calls ``api.poll(user)`` in a
loop, so every poll follows the pattern the docs recommend. It prints ``ready`` once every user's session
is open (their request queue exists and is consumed), and on SIGTERM stops polling and prints one JSON
line: polls done, how often each message was handled, the push -> handler delays and the process's peak
resident memory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import gevent
import gevent.pool
from gevent.event import Event

from amphora import RequestContext

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "longpoll"))
from api import LongPollApi  # noqa: E402

CREATE_CONCURRENCY = 200
"""Users whose first poll runs at once, before the polling starts: the report counts from "ready" on."""


class MeasuredApi(LongPollApi):
    """The example's API, noting when each message reached its handler."""

    def __init__(self, service: str) -> None:
        self.handled: Counter[str] = Counter()
        self.delays: list[float] = []
        super().__init__("bench", service, poll_timeout=30.0)

    def show_message(self, context: RequestContext, user: str, text: str) -> str | None:
        message_id, pushed = text.split()
        self.delays.append(time.time() - float(pushed))
        self.handled[message_id] += 1
        return super().show_message(context, user, text)


def peak_rss_mib() -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(url: str, service: str, users: int) -> None:
    os.environ["AMQP_URL"] = url  # LongPollApi's server finds the broker there, as the example's does
    api = MeasuredApi(service)
    names = [f"u{i}" for i in range(users)]
    pool = gevent.pool.Pool(CREATE_CONCURRENCY)
    for name in names:
        pool.spawn(api.poll, name, 0)  # the user's first poll, which opens their session (and queue)
    pool.join(raise_error=True)
    polls = 0
    stopping = Event()

    def poll_forever(user: str) -> None:
        nonlocal polls
        while not stopping.is_set():
            try:
                api.poll(user)
            except Exception:
                if stopping.is_set():
                    return  # the server stopped under this poll
                raise
            polls += 1

    pollers = [gevent.spawn(poll_forever, name) for name in names]
    print("ready", flush=True)
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    stopping.wait()
    api.stop()  # polls in progress end
    gevent.joinall(pollers, timeout=10)
    counts = Counter(api.handled.values())
    report = {
        "polls": polls,
        "handled": len(api.handled),
        "handled_more_than_once": sum(n for times, n in counts.items() if times > 1),
        "delays": sorted(api.delays),
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
