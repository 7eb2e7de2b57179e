"""A script that does one thing with amphora and ends without ``stop()``, for the exit tests.

``python exit_process.py HOW END SERVICE URL ARG``

HOW is what it does:

- ``longpoll``: ``receive_from_queue("poll", max_calls=1)`` on a server that consumes only per-key queues;
- ``serve``: a plain server, serving until its handler ran once;
- ``stuck``: the same, but the handler does not return for a minute, and the server's ``exit_timeout`` is 1 s;
- ``cast``: a client casting ``show(ARG)``, without waiting for anything.

A server's ``show(n)`` appends ``pid n`` to the file ARG and returns ``[pid, n]``. END is how the script ends:
``end`` (the end of the script), ``sys_exit`` (``sys.exit(0)``) or ``os_exit`` (``os._exit(0)``: no atexit).
"""

from __future__ import annotations

import os
import sys

import gevent
from gevent.event import Event

from amphora import AmqpRpcClient, AmqpRpcServer


def serve(how: str, service: str, url: str, log_path: str) -> None:
    options = {"exit_timeout": 1.0} if how == "stuck" else {}
    server = AmqpRpcServer(service, url=url, consume_default_queue=how != "longpoll", **options)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open until the process ends
    ran = Event()

    @server.add_function
    def show(n: int) -> list[int]:
        log.write(f"{os.getpid()} {n}\n")
        ran.set()
        if how == "stuck":
            gevent.sleep(60)
        return [os.getpid(), n]

    server.serve()
    if how == "longpoll":
        server.receive_from_queue("poll", max_calls=1, timeout=30)
    else:
        ran.wait(timeout=30)


def main() -> None:
    how, end, service, url, argument = sys.argv[1:]
    if how == "cast":
        AmqpRpcClient(service, url=url).cast.show(int(argument))
    else:
        serve(how, service, url, argument)
    if end == "sys_exit":
        sys.exit(0)
    if end == "os_exit":
        os._exit(0)


if __name__ == "__main__":
    main()
