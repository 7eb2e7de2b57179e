"""A server in its own process, for tests that kill servers.

``python rpc_process.py SERVICE URL LOG [--concurrency N] [--fanout] [--name NAME] [--ignore] [--queue-type T]``

Every execution is appended to LOG as ``pid function argument`` so tests can count executions. It prints
``ready`` once serving and stops gracefully on SIGTERM. ``--ignore`` makes ``maybe`` raise IgnoreRequest.
``block`` blocks the whole process (the hub too) until a file exists, as a handler that never yields would;
``stall`` does so for a number of seconds.
"""

from __future__ import annotations

import argparse
import os
import time

import gevent

from amphora import AmqpRpcFanoutServer, AmqpRpcServer, IgnoreRequest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service")
    parser.add_argument("url")
    parser.add_argument("log")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--fanout", action="store_true")
    parser.add_argument("--name")
    parser.add_argument("--ignore", action="store_true")
    parser.add_argument("--queue-type", default="classic")
    options = parser.parse_args()
    server_class = AmqpRpcFanoutServer if options.fanout else AmqpRpcServer
    server = server_class(
        options.service,
        url=options.url,
        concurrency=options.concurrency,
        name=options.name,
        queue_type=options.queue_type,
    )
    log = open(options.log, "a", buffering=1)  # noqa: SIM115 - open until the process ends

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

    @server.add_function
    def block(path):
        record("block", path)
        while not os.path.exists(path):
            time.sleep(0.01)

    @server.add_function
    def stall(seconds, tag):
        """Blocks the whole process, not only its greenlet (as a non-cooperative handler does)."""
        record("stall", tag)
        time.sleep(seconds)
        return tag

    @server.add_function
    def maybe(tag):
        record("maybe", tag)
        if options.ignore:
            raise IgnoreRequest()
        return server.name

    server.serve_forever(on_ready=lambda: print("ready", flush=True))


if __name__ == "__main__":
    main()
