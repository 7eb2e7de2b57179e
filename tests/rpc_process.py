"""A math server in its own process, for tests that kill servers: ``python rpc_process.py SERVICE URL LOG``.

Every execution is appended to LOG as ``pid function argument`` so tests can count executions. It prints
``ready`` once serving and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys

import gevent

from amphora import AmqpRpcServer


def main() -> None:
    service, url, log_path = sys.argv[1:4]
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    server = AmqpRpcServer(service, url=url, concurrency=concurrency)
    log = open(log_path, "a", buffering=1)

    def record(function: str, argument: object) -> None:
        log.write(f"{os.getpid()} {function} {argument}\n")

    @server.add_function
    def add(x, y):
        record("add", x)
        return x + y

    @server.add_function
    def slow(seconds, tag):
        record("slow", tag)
        gevent.sleep(seconds)
        return tag

    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop))
    server.serve()
    print("ready", flush=True)
    server.join()


if __name__ == "__main__":
    main()
