"""A gevent client called from other OS threads: ``call`` blocks only the calling thread, ``defer`` gives a
ThreadResult, ``cast`` as ever; in this process (not patched by gevent) and in child processes, patched or not.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gevent
import gevent.subprocess
import pytest

from amphora import NoResult, RemoteException
from amphora.hub_thread import HubThread, get_ident, gevent_wait
from amphora.threaded import ThreadResult
from helpers import wait_until

pytestmark = pytest.mark.timeout(120)

THREAD_CALLS_SCRIPT = Path(__file__).with_name("thread_calls.py")


@pytest.fixture
def math_server(make_server):
    server = make_server(concurrency=200)
    server.add_function(lambda x, y: x + y, "add")
    server.add_function(lambda x, y: x / y, "div")
    server.add_function(lambda seconds: gevent.sleep(seconds), "sleep")
    server.serve()
    return server


def test_the_test_process_is_not_patched_by_gevent():
    assert threading.get_ident is gevent.monkey.get_original("threading", "get_ident")


def test_sixteen_threads_of_this_process_make_200_calls_each(math_server, make_client):
    client = make_client(timeout=60)
    assert client.call.add(1, 1) == 2  # the own thread's call: direct, no twin
    assert client._twin is None

    def work(t: int) -> list[int]:
        return [client.call.add(t, i) if i % 2 else client.defer.add(t, i).get(timeout=60) for i in range(200)]

    with ThreadPoolExecutor(16) as executor:
        futures = [executor.submit(work, t) for t in range(16)]
        assert [gevent_wait(f, 100) for f in futures] == [[t + i for i in range(200)] for t in range(16)]
    twin = client._twin
    assert twin is not None and twin.uuid != client.uuid and twin._home == HubThread.shared().ident


def test_a_thread_gets_errors_timeouts_and_cast_confirms(math_server, make_client):
    client = make_client(timeout=10)

    def work() -> None:
        with pytest.raises(RemoteException, match="ZeroDivisionError"):
            client.call.div(1, 0)
        with pytest.raises(NoResult):
            client.call(timeout=0.2).sleep(1)
        deferred = client.defer.sleep(0.2)
        assert isinstance(deferred, ThreadResult) and not deferred.ready()
        with pytest.raises(TimeoutError):
            deferred.get(block=False)
        assert deferred.get(timeout=10) is None and deferred.successful()
        assert client.cast.add(1, 2).get(timeout=10) is None
        with pytest.raises(TypeError):  # cannot be encoded: nothing was sent
            client.call.add(object(), 1)

    with ThreadPoolExecutor(1) as executor:
        gevent_wait(executor.submit(work), 30)


def test_a_calling_thread_blocks_alone(math_server, make_client):
    """While a thread waits for a slow call, the client's own thread goes on calling."""
    client = make_client(timeout=10)
    with ThreadPoolExecutor(1) as executor:
        slow = executor.submit(client.call.sleep, 0.5)
        assert [client.call.add(i, 1) for i in range(20)] == [i + 1 for i in range(20)]
        assert not slow.done()
        assert gevent_wait(slow, 10) is None


def test_thread_result_waits_on_an_os_lock():
    result = ThreadResult()
    assert not result.ready() and not result.wait(0.01)
    threading.Timer(0.05, result.settle, (None, ValueError("no"))).start()
    with pytest.raises(ValueError, match="no"):
        result.get(timeout=5)
    assert result.ready() and not result.successful()


@pytest.mark.parametrize("mode", ["plain", "patched"])
def test_sixteen_threads_x_200_calls_from_another_process(math_server, amqp_url, service, mode):
    """``plain``: a process that never imports gevent's monkey (a threaded web app); ``patched``: one that
    patched everything, calling from real threads (gevent's thread pool)."""
    out = gevent.subprocess.run(
        [sys.executable, str(THREAD_CALLS_SCRIPT), service, amqp_url, mode, "16", "200"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report == {"correct": 3200, "wrong": [], "real_threads": True}


def test_the_hub_thread_is_another_os_thread():
    assert HubThread.shared().ident not in (0, get_ident())


CAST_FROM_A_THREAD_AND_EXIT = """
import sys, threading
from amphora import AmqpRpcClient, aio
service, url, how = sys.argv[1:]
if how == "thread":
    client = AmqpRpcClient(service, url=url)
    thread = threading.Thread(target=lambda: client.cast.note("from thread"))
    thread.start()
    thread.join()
else:
    import asyncio

    async def main():
        aio.AmqpRpcClient(service, url=url).cast.note("from asyncio")  # not awaited

    asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["thread", "asyncio"])
def test_a_cast_from_a_thread_or_asyncio_is_delivered_by_a_process_that_exits_at_once(
    make_server, amqp_url, service, how
):
    """At interpreter exit the hub thread's clients get their exit_timeout to have their outboxes confirmed."""
    server = make_server()
    noted: list[str] = []
    server.add_function(noted.append, "note")
    server.serve()
    for _ in range(3):
        out = gevent.subprocess.run(
            [sys.executable, "-c", CAST_FROM_A_THREAD_AND_EXIT, service, amqp_url, how],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    wait_until(lambda: len(noted) == 3)
    assert noted == [f"from {how}"] * 3
