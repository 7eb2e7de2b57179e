"""HubThread and the batched inboxes: work crosses OS threads, in order, one wake-up per batch."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import gevent
import pytest

from amphora import exiting
from amphora.hub_thread import AsyncioInbox, Batch, HubThread, get_ident, gevent_wait

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def hub_thread():
    thread = HubThread("test-hub")
    yield thread
    thread.stop(5)


def test_batch_wakes_once_per_batch_and_runs_in_order():
    wakes: list[int] = []
    ran: list[int] = []
    batch = Batch(lambda: wakes.append(1))
    for n in range(100):
        batch.post(ran.append, n)
    assert len(wakes) == 1 and ran == []
    batch.drain()
    assert ran == list(range(100))
    batch.post(ran.append, 100)
    assert len(wakes) == 2


def test_batch_runs_on_after_a_failing_callback():
    ran: list[int] = []
    batch = Batch(lambda: None)
    batch.post(lambda: 1 / 0)
    batch.post(ran.append, 1)
    batch.drain()
    assert ran == [1]


def test_submit_runs_in_the_hub_thread_and_returns_the_result(hub_thread):
    assert hub_thread.submit(get_ident).result(5) == hub_thread.ident != get_ident()
    assert hub_thread.submit(lambda: gevent.sleep(0.01) or "slept").result(5) == "slept"  # may block
    with pytest.raises(ZeroDivisionError):
        hub_thread.submit(lambda: 1 / 0).result(5)


def test_posts_from_many_threads_all_run_each_threads_in_order(hub_thread):
    seen: dict[int, list[int]] = {}

    def post_many(thread: int) -> None:
        seen[thread] = []
        for n in range(2000):
            hub_thread.post(seen[thread].append, n)

    threads = [threading.Thread(target=post_many, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hub_thread.submit(lambda: None).result(10)  # posted after all of them
    assert seen == {t: list(range(2000)) for t in range(8)}


def test_a_blocking_post_delays_later_posts_without_losing_them(hub_thread):
    ran: list[str] = []
    hub_thread.post(gevent.sleep, 0.05)
    hub_thread.post(ran.append, "after")
    hub_thread.submit(lambda: None).result(5)
    assert ran == ["after"]


def test_asyncio_inbox_settles_futures_from_another_thread_and_skips_cancelled_ones(hub_thread):
    async def main() -> list[object]:
        inbox = AsyncioInbox.of(asyncio.get_running_loop())
        assert AsyncioInbox.of(asyncio.get_running_loop()) is inbox
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(50)]
        futures[3].cancel()
        for n, future in enumerate(futures):
            error = ValueError(n) if n == 7 else None
            hub_thread.post(inbox.settle, future, n, error)
        done = await asyncio.gather(*futures, return_exceptions=True)
        return [type(r).__name__ if isinstance(r, BaseException) else r for r in done]

    expected: list[object] = list(range(50))
    expected[3], expected[7] = "CancelledError", "ValueError"
    assert asyncio.run(main()) == expected


def test_gevent_wait_blocks_only_the_waiting_greenlet(hub_thread):
    other = gevent.spawn(lambda: [gevent.sleep(0.01) for _ in range(5)] and "other ran")
    assert gevent_wait(hub_thread.submit(lambda: gevent.sleep(0.2) or 42), 5) == 42
    assert other.dead and other.value == "other ran"
    with pytest.raises(gevent.Timeout):
        gevent_wait(hub_thread.submit(gevent.sleep, 5), 0.05)


def test_stop_ends_the_thread_and_refuses_posts():
    thread = HubThread("stopped-hub")
    thread.stop(5)
    assert not thread.running
    with pytest.raises(RuntimeError):
        thread.post(print)


def test_shared_is_one_thread_per_process():
    assert HubThread.shared() is HubThread.shared()
    assert HubThread.shared() in exiting._running


SCRIPT = """
{patch}
import sys
from amphora.hub_thread import HubThread, get_ident
from amphora import exiting

class Resident:
    exit_timeout = 5.0
    def _stop_at_exit(self, timeout):
        import gevent
        gevent.sleep(0.1)  # like an outbox flush: blocks a greenlet of the hub thread
        print("stopped in hub thread:", get_ident() == hub.ident, flush=True)

hub = HubThread.shared()
resident = Resident()
hub.submit(exiting.running, resident).result(5)
print("main thread is another:", get_ident() != hub.ident, flush=True)
"""


@pytest.mark.parametrize("patch", ["", "from gevent import monkey; monkey.patch_all()"])
def test_at_exit_what_runs_in_the_hub_thread_is_stopped_there(patch):
    """Also in a process gevent patched, where the hub thread must still be a real OS thread."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(patch=patch))],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["main thread is another: True", "stopped in hub thread: True"]


def test_an_asyncio_inbox_does_not_keep_its_loop_alive():
    loop = asyncio.new_event_loop()
    AsyncioInbox.of(loop)
    loop.close()
    reference = weakref.ref(loop)
    del loop
    gc.collect()
    assert reference() is None
