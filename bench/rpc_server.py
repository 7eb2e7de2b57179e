"""The amphora server of ``bench.rpc``, in its own process: ``python -m bench.rpc_server URL SERVICE MODE``.

MODE is ``transient`` (``persistent=False``) or ``reliable`` (the defaults: persistent replies, confirms).
It serves ``add(a, b)`` and ``echo(data)`` for SERVICE, prints ``ready`` once consuming, and stops
gracefully (``AmqpRpcServer.stop``) when its stdin closes: the benchmark ended or died.
"""

from __future__ import annotations

import sys
from typing import Any

from gevent import os as gevent_os

from amphora import AmqpRpcServer

MODES = {"transient": False, "reliable": True}
"""Mode name -> ``persistent`` of the server (and of the benchmark's client)."""


def add(a: Any, b: Any) -> Any:
    return a + b


def echo(data: Any) -> Any:
    return data


def main(url: str, service: str, mode: str) -> None:
    server = AmqpRpcServer(service, url=url, persistent=MODES[mode])
    server.add_function(add)
    server.add_function(echo)
    server.serve()
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    gevent_os.make_nonblocking(stdin)
    while gevent_os.nb_read(stdin, 4096):  # the server's greenlets run meanwhile
        pass
    server.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
