"""A server with ``async def`` handlers in a process of its own, for tests/test_async_handlers.py.

``python async_server_process.py SERVICE URL MODE``

MODE ``patched``: ``monkey.patch_all()`` first, an amphora.AmqpRpcServer (the handlers run on amphora's own
event loop) serving until SIGTERM. MODE ``asyncio``: ``asyncio.run`` of an application hosting an
amphora.aio_server.AmqpRpcServer, whose task is cancelled on SIGTERM. Either prints ``ready`` once serving,
and ``started TAG`` when ``slow`` starts.
"""

from __future__ import annotations

import sys

if sys.argv[3] == "patched":
    from gevent import monkey

    monkey.patch_all()

import asyncio  # noqa: E402
import signal  # noqa: E402
from typing import Any  # noqa: E402

from amphora import AmqpRpcServer, aio_server  # noqa: E402


def add_functions(server: Any) -> None:
    @server.add_function
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    @server.add_function
    async def slow(seconds: float, tag: str) -> str:
        print("started", tag, flush=True)
        await asyncio.sleep(seconds)
        return tag


async def host(service: str, url: str) -> None:
    server = aio_server.AmqpRpcServer(service, url=url)
    add_functions(server)
    task = asyncio.ensure_future(server.serve(on_ready=lambda: print("ready", flush=True)))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def main() -> None:
    service, url, mode = sys.argv[1:4]
    if mode == "asyncio":
        asyncio.run(host(service, url))
        return
    server = AmqpRpcServer(service, url=url)
    add_functions(server)
    server.serve_forever(on_ready=lambda: print("ready", flush=True))


if __name__ == "__main__":
    main()
