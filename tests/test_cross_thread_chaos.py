"""Calls from asyncio and from other OS threads through a broker kill -9 and network cuts: none lost, every
result correct (the reliability core is the gevent client's, living in the HubThread)."""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gevent
import pytest

from amphora import AmqpRpcClient, aio
from amphora.hub_thread import gevent_wait
from amphora.testing.faultproxy import FaultProxy
from helpers import executions, wait_until

pytestmark = pytest.mark.timeout(240)

THREADS = 16


class Calls:
    """``add(i, i)`` for i in range(n), made from asyncio or from 16 OS threads; ``done`` counts those
    that ended so far, ``results()`` waits for all (without blocking this thread's hub)."""

    def __init__(self, how: str, service: str, url: str, n: int, **options: Any) -> None:
        self.done = 0
        self._executor = ThreadPoolExecutor(THREADS)
        self._options = {"url": url, "timeout": 120, **options}
        if how == "asyncio":
            self._futures = [self._executor.submit(asyncio.run, self._from_asyncio(service, n))]
        else:
            client = AmqpRpcClient(service, **self._options)
            self._futures = [self._executor.submit(self._from_thread, client, t, n) for t in range(THREADS)]
            self._client = client

    def _count(self, _: object = None) -> None:
        self.done += 1

    async def _from_asyncio(self, service: str, n: int) -> list[Any]:
        async with aio.AmqpRpcClient(service, **self._options) as client:
            futures = [client.defer.add(i, i) for i in range(n)]
            for future in futures:
                future.add_done_callback(self._count)
            return await aio.parallel(*futures, return_exceptions=True)

    def _from_thread(self, client: AmqpRpcClient, thread: int, n: int) -> list[Any]:
        results = []
        for i in range(thread, n, THREADS):
            try:
                results.append(client.call.add(i, i) if i % 2 else client.defer.add(i, i).get(timeout=120))
            except Exception as exc:  # noqa: BLE001 - a lost call shows as a wrong result
                results.append(exc)
            self._count()
        return results

    def results(self) -> list[Any]:
        """Every result in order of i."""
        parts = [gevent_wait(future, 200) for future in self._futures]
        self._executor.shutdown()
        if len(parts) == 1:
            return parts[0]
        by_i = {i: r for t, part in enumerate(parts) for i, r in zip(range(t, 10**9, THREADS), part, strict=False)}
        return [by_i[i] for i in sorted(by_i)]

    def stop(self) -> None:
        if hasattr(self, "_client"):
            self._client.stop()


def assert_all_ran_and_correct(calls: Calls, n: int, execution_log: Any) -> None:
    assert calls.results() == [2 * i for i in range(n)]
    counts = collections.Counter(argument for _, _, argument in executions(execution_log))
    assert set(counts) == {str(i) for i in range(n)}  # at least once each; redeliveries may repeat


@pytest.mark.parametrize("how", ["asyncio", "threads"])
def test_broker_killed_during_calls_loses_none(private_rabbit_node, service, start_server, execution_log, how):
    url = private_rabbit_node.url
    start_server(url)
    start_server(url)
    n = 2000
    calls = Calls(how, service, url, n)
    wait_until(lambda: calls.done >= 200, timeout=60)  # kill it mid-stream
    private_rabbit_node.kill()
    gevent.sleep(3)  # the scenario: the broker stays down for three seconds
    private_rabbit_node.start()
    assert_all_ran_and_correct(calls, n, execution_log)
    calls.stop()


@pytest.mark.parametrize("how", ["asyncio", "threads"])
def test_network_cut_during_calls_loses_none(rabbit_node, amqp_url, service, start_server, execution_log, how):
    start_server(amqp_url)
    n = 2000
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        calls = Calls(how, service, proxy.url_for(amqp_url), n, heartbeat=1)
        wait_until(lambda: calls.done >= 300, timeout=60)
        connected = proxy.accepted
        proxy.cut()
        wait_until(lambda: calls.done >= 1000, timeout=60)
        proxy.cut()
        assert_all_ran_and_correct(calls, n, execution_log)
        assert proxy.accepted >= connected + 4  # the calling client's two links connected again after each cut
        calls.stop()
