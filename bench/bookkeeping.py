"""The CPU cost of amphora's own reliability bookkeeping per message, without a broker.

    python -m bench.bookkeeping [--messages N] [--repeat R]

- outbox: ``Outbox.publish`` of a small quiet message and its confirm, through a fake link whose channel
  publishes nothing (the outbox's code alone: its state, the pump not involved, the quiet-read decision);
- pending: ``PendingCalls.add`` and ``pop`` of a call with a timeout (the deadline bookkeeping, one timer).

Best of ``--repeat`` runs, in microseconds per message. To compare two trees, run this file with each
tree's ``PYTHONPATH`` (``PYTHONPATH=OTHER python bench/bookkeeping.py``).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

from gevent.event import Event

from amphora.amqp import Properties
from amphora.outbox import Outbox
from amphora.pending import PendingCall, PendingCalls


class _Confirmation:
    exception = None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback


class _QuietReads:
    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


class _Connection:
    reads = _QuietReads()  # what the outbox called before Connection.hold_reads (issue 21.3): older trees

    def hold_reads(self, holder: object) -> None:
        pass

    def release_reads(self, holder: object) -> None:
        pass

    def reads_may_wait(self, holder: object) -> None:
        pass


class _Channel:
    def __init__(self) -> None:
        self.connection = _Connection()
        self.published: list[_Confirmation] = []

    def basic_publish(self, body: bytes, exchange: str, routing_key: str, properties: Any, mandatory: bool) -> Any:
        confirmation = _Confirmation()
        self.published.append(confirmation)
        return confirmation


class _Link:
    """Always up, on its first connection."""

    generation = 1
    frame_max = 131072

    def __init__(self) -> None:
        self.ready = Event()
        self.ready.set()
        self.channel = _Channel()
        self.connection = self.channel.connection

    def on_ready(self, callback: Callable[[Any], None]) -> None:
        pass

    def isolate(self, alone: bool) -> None:
        pass


def outbox_cost(messages: int, repeat: int) -> float:
    link = _Link()
    outbox = Outbox(link)  # type: ignore[arg-type]  # the fake link has what the outbox uses
    properties = Properties()
    published = link.channel.published

    def run() -> None:
        for _ in range(messages):
            outbox.publish("", "queue", b"body", properties, quiet=True)
            confirmation = published.pop()
            confirmation.callback(confirmation)

    return min(timeit.repeat(run, number=1, repeat=repeat)) / messages * 1e6


def pending_cost(messages: int, repeat: int) -> float:
    registry = PendingCalls()
    calls = [(str(i), PendingCall("f", 30.0)) for i in range(messages)]

    def run() -> None:
        for request_id, call in calls:
            registry.add(request_id, call)
            registry.pop(request_id)

    return min(timeit.repeat(run, number=1, repeat=repeat)) / messages * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bookkeeping", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run (default 50,000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs, of which the best counts (default 7)")
    args = parser.parse_args(argv)
    print(f"outbox publish + confirm: {outbox_cost(args.messages, args.repeat):.2f} us per message")
    print(f"pending add + pop:        {pending_cost(args.messages, args.repeat):.2f} us per call")


if __name__ == "__main__":
    main()
