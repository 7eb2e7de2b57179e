"""M-inflight of ``bench.rpc`` in a process of its own: ``python -m bench.rpc_inflight URL MODE CALLS``.

Prints the workload's metrics as JSON on stdout (progress on stderr). A new process measures what the calls in
flight cost a client, not the heap that the timed workloads or the other mode left in the benchmark's process.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from bench.rpc import Sizes, in_flight


def main(url: str, mode: str, calls: str) -> None:
    print(json.dumps(in_flight(url, mode, dataclasses.replace(Sizes(), in_flight_calls=int(calls)))))


if __name__ == "__main__":
    main(*sys.argv[1:])
