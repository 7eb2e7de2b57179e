"""An asyncio web application (Tornado) calling the math service (examples/math_server.py) with
amphora.aio: ``python examples/tornado/app.py [port]`` (broker from $AMQP_URL or localhost).

- ``GET /add?x=2&y=3`` -> ``{"result": 5}``: one call, awaited.
- ``GET /squares?n=5`` -> ``{"result": [1, 4, 9, 16, 25]}``: n calls at once, gathered.
- ``GET /hypotenuse?a=3&b=4`` -> ``{"result": 5.0}``; ``/div?x=1&y=0`` -> 400 with the remote error.

It prints ``listening on <port>`` once it serves (port 0: any free one), and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from amphora import RemoteException, aio


class MathHandler(tornado.web.RequestHandler):
    """A JSON answer from the math service; a remote exception is the client's fault here: 400."""

    def initialize(self, client: aio.AmqpRpcClient) -> None:
        self.client = client

    def number(self, name: str) -> float:
        value = self.get_query_argument(name)
        try:
            return int(value)
        except ValueError:
            return float(value)

    async def answer(self, calls: Any) -> None:
        try:
            self.write({"result": await calls})
        except RemoteException as exc:
            self.set_status(400)
            self.write({"error": str(exc)})


class Add(MathHandler):
    async def get(self) -> None:
        await self.answer(self.client.call.add(self.number("x"), self.number("y")))


class Divide(MathHandler):
    async def get(self) -> None:
        await self.answer(self.client.call.div(self.number("x"), self.number("y")))


class Hypotenuse(MathHandler):
    async def get(self) -> None:
        await self.answer(self.client.call.hypotenuse(self.number("a"), self.number("b")))


class Squares(MathHandler):
    async def get(self) -> None:
        n = int(self.get_query_argument("n"))
        await self.answer(asyncio.gather(*(self.client.call.multiply(i, i) for i in range(1, n + 1))))


def make_app(client: aio.AmqpRpcClient) -> tornado.web.Application:
    routes = [("/add", Add), ("/div", Divide), ("/hypotenuse", Hypotenuse), ("/squares", Squares)]
    return tornado.web.Application([(path, handler, {"client": client}) for path, handler in routes])


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with aio.AmqpRpcClient("math") as client:
        sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(make_app(client))
        server.add_sockets(sockets)
        print(f"listening on {sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8888))
