"""The ping-pong responder, one process per client library: ``python -m bench.echo CLIENT URL QUEUE``.

It consumes QUEUE with the library under test and echoes every body to its reply_to queue. It prints
``ready`` once consuming, and exits when its stdin closes (the benchmark ended or died).
"""

from __future__ import annotations

import sys

from gevent import os as gevent_os

from bench import clients


def main(client_name: str, url: str, queue: str) -> None:
    client = clients.load(client_name)(url)
    client.serve_echo(queue)
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    gevent_os.make_nonblocking(stdin)
    while gevent_os.nb_read(stdin, 4096):  # yields to the library's greenlets meanwhile
        pass


if __name__ == "__main__":
    main(*sys.argv[1:])
