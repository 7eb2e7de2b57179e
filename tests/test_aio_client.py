"""amphora.aio: the asyncio client against gevent servers on a real broker, under asyncio's loop and uvloop.

The servers run in this process's gevent hub (main thread) or in child processes; each test's coroutine
runs on an event loop in a thread of its own, which the main thread waits for without blocking its hub.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import gevent
import pytest

from amphora import NoResult, RemoteException, Unroutable, aio
from amphora.hub_thread import gevent_wait
from amphora.testing.faultproxy import FaultProxy
from helpers import executions, wait_until

pytestmark = pytest.mark.timeout(60)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="needs uvloop"))]

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=LOOPS)
def run(request) -> Run:
    """``run(coroutine)``: its result, from an event loop (asyncio's or uvloop's) in another thread."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run_in_loop_thread(coroutine: Coroutine[Any, Any, Any], timeout: float = 50) -> Any:
        def in_thread() -> Any:
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(coroutine)

        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            return gevent_wait(executor.submit(in_thread), timeout)

    return run_in_loop_thread


@pytest.fixture
def math_server(make_server):
    server = make_server()
    server.cast_seen = []
    server.add_function(lambda x, y: x + y, "add")
    server.add_function(lambda x, y: x / y, "div")
    server.add_function(server.cast_seen.append, "note")

    @server.add_function
    def slow(seconds: float, tag: str) -> str:
        gevent.sleep(seconds)
        return tag

    server.serve()
    return server


def test_call_defer_cast_and_parallel(math_server, amqp_url, service, run):
    async def main() -> None:
        async with aio.AmqpRpcClient(service, url=amqp_url, timeout=20) as client:
            assert await client.call.add(1, 2) == 3
            assert await client.call(timeout=5).add(x=2, y=3) == 5
            deferred = [client.defer.add(i, i) for i in range(300)]
            assert all(isinstance(d, asyncio.Future) for d in deferred)
            assert await aio.parallel(*deferred) == [2 * i for i in range(300)]
            await client.cast.note("cast")
            with pytest.raises(RemoteException, match="ZeroDivisionError"):
                await client.call.div(1, 0)
            results = await aio.parallel(client.defer.div(1, 0), client.call.add(1, 1), return_exceptions=True)
            assert isinstance(results[0], RemoteException) and results[1] == 2
            assert client.uuid is not None

    run(main())
    wait_until(lambda: math_server.cast_seen == ["cast"])


def test_calls_from_many_tasks_and_two_loops_at_once(math_server, amqp_url, service, run):
    async def main(offset: int) -> list[int]:
        async with aio.AmqpRpcClient(service, url=amqp_url, timeout=30) as client:

            async def task(n: int) -> list[int]:
                return [await client.call.add(offset + n, i) for i in range(20)]

            return [r for rs in await asyncio.gather(*(task(n) for n in range(50))) for r in rs]

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        other = executor.submit(asyncio.run, main(1000))
        assert run(main(0)) == [n + i for n in range(50) for i in range(20)]
        assert gevent_wait(other, 50) == [1000 + n + i for n in range(50) for i in range(20)]


def test_errors_reach_the_awaiting_task(math_server, amqp_url, service, run):
    async def main() -> None:
        async with aio.AmqpRpcClient(service, url=amqp_url, timeout=20) as client:
            with pytest.raises(NoResult):
                await client.call(timeout=0.3).slow(1, "late")
            with pytest.raises(TypeError):  # the serializer refuses it: nothing was sent
                await client.call.add(object(), 1)
            with pytest.raises(Unroutable):
                await client.call(routing_key="nobody").add(1, 1)
            with pytest.raises(TimeoutError):
                await aio.parallel(client.defer.slow(1, "a"), timeout=0.2)
            assert await client.call.add(1, 1) == 2  # the client still works

    run(main())


def test_a_client_that_cannot_connect_fails_async_with(amqp_url, service, run):
    async def main() -> None:
        async with aio.AmqpRpcClient(service, url=amqp_url.replace("guest:guest", "guest:wrong")):
            raise AssertionError("connected with a wrong password")

    with pytest.raises(Exception, match="(?i)access|auth|refused"):
        run(main())


def test_cancelling_a_waiting_task_drops_the_reply_not_the_request(math_server, amqp_url, service, run):
    """The request was already published: it runs on a server; its reply is dropped when it comes."""
    ran: list[str] = []
    running = threading.Event()
    math_server.add_function(lambda tag: ran.append(tag) or running.set() or gevent.sleep(0.3) or tag, "record")

    async def main() -> None:
        async with aio.AmqpRpcClient(service, url=amqp_url, timeout=20) as client:
            task = asyncio.ensure_future(client.call.record("cancelled"))
            assert await asyncio.to_thread(running.wait, 10)  # the request reached its handler
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await client.call.slow(0.5, "after") == "after"  # the dropped reply did not disturb it

    run(main())
    assert ran == ["cancelled"]


def test_tune_function_routes_by_argument(make_server, make_client, amqp_url, service, run):
    server = make_server()
    server.add_function(lambda user, text: f"{user}: {text}", "show")
    server.serve()
    make_client().create_new_request_queue("alice")
    receiver = server.receive_from_queue("alice", max_calls=1, block=False)

    async def main() -> str:
        async with aio.AmqpRpcClient(service, url=amqp_url, timeout=20) as client:

            @client.tune_function("show")
            def by_user(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                return args[0]

            return await client.call.show("alice", "hi")

    assert run(main()) == "alice: hi"
    assert receiver.wait(timeout=10) and receiver.calls == 1


def test_fanout_gather(amqp_url, start_server, service, run, execution_log):
    for i in range(2):
        start_server(amqp_url, "--fanout", "--name", f"node{i}")

    async def main() -> tuple[Any, Any]:
        async with aio.AmqpRpcFanoutClient(service, url=amqp_url, timeout=20) as client:
            return await client.gather(timeout=10, expect=2).maybe("x"), await client.call.add(1, 2)

    assert run(main()) == ({"node0": "node0", "node1": "node1"}, 3)
    wait_until(lambda: len([e for e in executions(execution_log) if e[1] == "add"]) == 2)


def test_close_ends_the_calls_of_that_client(math_server, amqp_url, service, run):
    async def main() -> None:
        client = aio.AmqpRpcClient(service, url=amqp_url, timeout=20)
        assert await client.call.add(1, 1) == 2
        await client.close()
        with pytest.raises(RuntimeError, match="closed"):
            await client.call.add(1, 1)

    run(main())


def test_a_client_still_connecting_holds_up_no_other_client(math_server, rabbit_node, amqp_url, service, run):
    """Clients are made in greenlets of the hub thread: one whose broker does not answer (a blackholed
    network, connection_timeout 10 s) delays only its own calls."""
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        proxy.stall()

        async def main() -> float:
            stuck = aio.AmqpRpcClient(service, url=proxy.url_for(amqp_url), timeout=20)
            started = time.monotonic()
            async with aio.AmqpRpcClient(service, url=amqp_url, timeout=20) as client:
                assert await client.call.add(1, 2) == 3
            took = time.monotonic() - started
            await stuck.close()
            return took

        assert run(main()) < 5
