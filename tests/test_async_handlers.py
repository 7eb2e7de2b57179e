"""``async def`` handlers, called by a gevent client, on a server hosted by gevent (the handlers run on
amphora's own event loop) and on one hosted by an asyncio application (they run on its loop)."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

from amphora import (
    AmqpRpcClient,
    AmqpRpcFanoutServer,
    AmqpRpcServer,
    HandlerTimeout,
    IgnoreRequest,
    RemoteException,
    RequestContext,
    aio,
    aio_server,
)
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None
needs_uvloop = pytest.mark.skipif(uvloop is None, reason="needs uvloop")
SERVER_PROCESS = Path(__file__).with_name("async_server_process.py")


class AppLoop:
    """An asyncio application's event loop, in a thread of its own, hosting servers."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop) -> None:
        self.loop = loop_factory()
        self._thread = gevent.get_hub().threadpool.spawn(self.loop.run_forever)
        self._tasks: list[asyncio.Task[None]] = []

    def host(self, server: aio_server.AmqpRpcServer) -> Callable[[], None]:
        """Serve ``server`` from the application's loop (``await server.serve()``) once it consumes;
        returns a function that cancels that task (which stops the server gracefully) and waits for it."""
        task = wait_for(asyncio.run_coroutine_threadsafe(self._start(server), self.loop))
        self._tasks.append(task)
        return lambda: self._cancel(task)

    async def _start(self, server: aio_server.AmqpRpcServer) -> asyncio.Task[None]:
        ready = asyncio.Event()
        task = asyncio.ensure_future(server.serve(on_ready=ready.set))
        await ready.wait()  # as a gevent server's serve() returns once it consumes
        return task

    def _cancel(self, task: asyncio.Task[None]) -> None:
        self.loop.call_soon_threadsafe(task.cancel)
        wait_for(asyncio.run_coroutine_threadsafe(asyncio.wait([task]), self.loop))

    def close(self) -> None:
        for task in self._tasks:
            self._cancel(task)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.get()
        self.loop.close()


def wait_for(future: Any) -> Any:
    """The result of a concurrent.futures.Future, waited for without blocking the gevent hub."""
    return gevent.get_hub().threadpool.apply(future.result, (30,))


class Hosting:
    """Makes servers and serves them, under gevent (``serve()``) or from an asyncio application's loop
    (asyncio's own or uvloop's)."""

    def __init__(self, kind: str, make_server: Callable[..., AmqpRpcServer], service: str, url: str) -> None:
        self._app = (
            None if kind == "gevent" else AppLoop(uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop)
        )
        self._make_server = make_server
        self._service = service
        self._url = url

    def make(self, **options: Any) -> Any:
        """A server of the test's service: an amphora.AmqpRpcServer, or an aio_server.AmqpRpcServer."""
        if self._app is None:
            return self._make_server(**options)
        return aio_server.AmqpRpcServer(self._service, url=self._url, **options)

    def start(self, server: Any) -> Callable[[], None]:
        """Serve ``server``; returns a function that stops it gracefully and waits until it stopped."""
        if self._app is None:
            server.serve()
            return server.stop
        return self._app.host(server)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


@pytest.fixture(params=["gevent", "asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def hosting(request: pytest.FixtureRequest, make_server, service, amqp_url) -> Iterator[Hosting]:
    hosting = Hosting(request.param, make_server, service, amqp_url)
    yield hosting
    hosting.close()


def test_results_and_exceptions_of_async_handlers(make_client, hosting):
    server = hosting.make()

    @server.add_function
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0.001)
        return x + y

    @server.add_function
    async def fail(reason: str) -> None:
        await asyncio.sleep(0)
        raise ValueError(reason)

    @server.add_function
    def plain(x: int) -> int:
        return -x

    hosting.start(server)
    client = make_client()
    assert client.call.add(2, 3) == 5
    assert [p.get(timeout=10) for p in [client.defer.add(n, n) for n in range(50)]] == [2 * n for n in range(50)]
    assert client.call.plain(4) == -4
    with pytest.raises(RemoteException) as raised:
        client.call.fail("no")
    assert raised.value.error_type == "ValueError" and raised.value.args == ("no",)


def test_an_async_handler_over_its_time_limit_is_cancelled(make_client, hosting):
    server = hosting.make()
    cancelled: list[str] = []

    @server.add_function(time_limit=0.3)
    async def slow(label: str) -> None:
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            cancelled.append(label)
            raise

    hosting.start(server)
    client = make_client()
    with pytest.raises(HandlerTimeout):
        client.call(timeout=10).slow("a")
    wait_until(lambda: cancelled == ["a"])


def test_an_async_handler_gets_the_request_context(make_client, hosting):
    server = hosting.make(settings={"unit": "cm"})

    @server.add_function(context=True)
    async def describe(context: RequestContext, x: int) -> list[Any]:
        context.reply_headers["x-seen"] = x
        return [context.function, context.headers.get("x-tenant"), context.server.settings["unit"], x]

    hosting.start(server)
    client = make_client()
    assert client.call(headers={"x-tenant": "t1"}).describe(7) == ["describe", "t1", "cm", 7]


def test_concurrency_bounds_async_handlers(make_client, hosting):
    server = hosting.make(concurrency=3)
    running = [0, 0]  # now, most at once; only touched on the handlers' loop

    @server.add_function
    async def busy(n: int) -> int:
        running[0] += 1
        running[1] = max(running[1], running[0])
        await asyncio.sleep(0.1)
        running[0] -= 1
        return n

    hosting.start(server)
    client = make_client()
    assert [p.get(timeout=20) for p in [client.defer.busy(n) for n in range(12)]] == list(range(12))
    assert running[1] == 3


def test_a_graceful_stop_waits_for_running_async_handlers_and_sends_their_replies(make_client, hosting):
    server = hosting.make()
    started: list[int] = []

    @server.add_function
    async def work(n: int) -> int:
        started.append(n)
        await asyncio.sleep(0.5)
        return n * 10

    stop = hosting.start(server)
    client = make_client()
    pending = [client.defer.work(n) for n in range(5)]
    wait_until(lambda: len(started) == 5)
    stop()
    assert not server.serving
    assert [p.get(timeout=10) for p in pending] == [0, 10, 20, 30, 40]


@pytest.mark.timeout(240)
def test_broker_killed_during_calls_to_an_asyncio_hosted_server_loses_none(private_rabbit_node, service):
    url = private_rabbit_node.url
    app = AppLoop()
    server = aio_server.AmqpRpcServer(service, url=url)
    ran: collections.Counter[int] = collections.Counter()

    @server.add_function
    async def add(x: int, y: int) -> int:
        ran[x] += 1
        await asyncio.sleep(0.001)
        return x + y

    app.host(server)
    client = AmqpRpcClient(service, url=url, timeout=120)
    n = 2000
    pending = [client.defer.add(i, i) for i in range(n)]
    wait_until(lambda: len(ran) >= 200, timeout=60)  # kill it mid-stream
    private_rabbit_node.kill()
    assert len(ran) < n
    gevent.sleep(3)  # the broker stays down for three seconds
    private_rabbit_node.start()
    assert [p.get(timeout=150) for p in pending] == [2 * i for i in range(n)]
    assert set(ran) == set(range(n))  # at least once each; redeliveries may repeat
    client.stop()
    app.close()


@pytest.mark.parametrize("mode", ["patched", "asyncio"])
def test_async_handlers_in_a_process_of_their_own_and_its_graceful_stop(make_client, service, amqp_url, mode):
    """Under ``monkey.patch_all()`` (amphora's loop thread is a real one), and in an asyncio application
    stopped by SIGTERM: the handler still running finishes and its reply is sent."""
    server = subprocess.Popen(
        [sys.executable, str(SERVER_PROCESS), service, amqp_url, mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = make_client()
        assert [p.get(timeout=20) for p in [client.defer.add(n, 1) for n in range(200)]] == list(range(1, 201))
        running = client.defer.slow(1.0, "finished")
        assert gevent.get_hub().threadpool.apply(server.stdout.readline) == "started finished\n"
        server.terminate()
        assert running.get(timeout=20) == "finished"
        assert gevent.get_hub().threadpool.apply(server.wait, (20,)) == 0
    finally:
        server.kill()
        server.wait()


def test_an_asyncio_app_calls_the_server_it_hosts_with_the_asyncio_client(service, amqp_url):
    """Everything on one loop: the aio client's calls, the server hosted by the loop, its handlers, which
    themselves call another function of the service."""
    app = AppLoop()
    server = aio_server.AmqpRpcServer(service, url=amqp_url)

    async def scenario() -> list[int]:
        async with aio.AmqpRpcClient(service, url=amqp_url, timeout=20) as client:

            @server.add_function
            async def square(x: int) -> int:
                return x * x

            @server.add_function
            async def sum_of_squares(n: int) -> int:
                return sum(await asyncio.gather(*(client.call.square(i) for i in range(n))))

            ready = asyncio.Event()
            serving = asyncio.ensure_future(server.serve(on_ready=ready.set))
            await ready.wait()
            results = await asyncio.gather(*(client.call.sum_of_squares(n) for n in range(10)))
            serving.cancel()
            await asyncio.wait([serving])
            return results

    try:
        assert wait_for(asyncio.run_coroutine_threadsafe(scenario(), app.loop)) == [
            sum(i * i for i in range(n)) for n in range(10)
        ]
        assert not server.serving
    finally:
        app.close()


def test_an_asyncio_hosted_fanout_server_and_a_gevent_one_both_answer(service, amqp_url, make_fanout_client):
    app = AppLoop()
    hosted = aio_server.AmqpRpcFanoutServer(service, url=amqp_url, name="hosted")
    plain = AmqpRpcFanoutServer(service, url=amqp_url, name="plain")

    @hosted.add_function
    async def whoami() -> str:
        await asyncio.sleep(0)
        return "asyncio"

    plain.add_function(lambda: "gevent", "whoami")
    try:
        app.host(hosted)
        plain.serve()
        replies = make_fanout_client().gather(timeout=10, expect=2).whoami()
        assert replies == {"hosted": "asyncio", "plain": "gevent"}
    finally:
        plain.stop()
        app.close()


def test_an_async_handler_can_ignore_a_request(make_client, hosting):
    server = hosting.make()
    seen: list[int] = []

    @server.add_function
    async def once(x: int) -> int:
        seen.append(x)
        if len(seen) == 1:
            raise IgnoreRequest()  # handed back: the broker delivers it again
        return x

    hosting.start(server)
    assert make_client().call(timeout=20).once(7) == 7
    assert seen == [7, 7]
