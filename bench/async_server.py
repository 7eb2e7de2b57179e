"""The server of ``bench.async_handlers``, in its own process: ``python -m bench.async_server URL SERVICE HOSTING``.

HOSTING ``plain``: an amphora.AmqpRpcServer with a plain ``add``; ``gevent``: the same with ``async def add``
(run on amphora's own event loop); ``asyncio`` and ``uvloop``: an amphora.aio_server.AmqpRpcServer with
``async def add``, hosted by ``asyncio.run`` on that loop. Prints ``ready`` once consuming and stops
gracefully when its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from gevent import os as gevent_os

from amphora import AmqpRpcServer, aio_server

HOSTINGS = ("plain", "gevent", "asyncio", "uvloop")


def add(a: Any, b: Any) -> Any:
    return a + b


async def add_async(a: Any, b: Any) -> Any:
    return a + b


def serve_in_gevent(url: str, service: str, hosting: str) -> None:
    server = AmqpRpcServer(service, url=url)
    server.add_function(add if hosting == "plain" else add_async, "add")
    server.serve()
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    gevent_os.make_nonblocking(stdin)
    while gevent_os.nb_read(stdin, 4096):  # the server's greenlets run meanwhile
        pass
    server.stop()


async def serve_in_asyncio(url: str, service: str) -> None:
    server = aio_server.AmqpRpcServer(service, url=url)
    server.add_function(add_async, "add")
    serving = asyncio.ensure_future(server.serve(on_ready=lambda: print("ready", flush=True)))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until it closes
    await server.stop()
    await serving


def main(url: str, service: str, hosting: str) -> None:
    if hosting in ("plain", "gevent"):
        serve_in_gevent(url, service, hosting)
        return
    loop_factory = None
    if hosting == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_in_asyncio(url, service))


if __name__ == "__main__":
    main(*sys.argv[1:])
