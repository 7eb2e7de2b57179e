"""Workers: jobs in a bounded set of long-lived greenlets (pure logic, no broker)."""

from __future__ import annotations

import gevent
import pytest
from gevent.event import Event

from amphora.workers import Workers

pytestmark = pytest.mark.timeout(30)


def test_at_most_size_jobs_run_at_once_and_all_run_in_order():
    workers = Workers(3)
    release = Event()
    running, most, started = [0], [0], []

    def job(n: int) -> None:
        started.append(n)
        running[0] += 1
        most[0] = max(most[0], running[0])
        release.wait()
        running[0] -= 1

    for n in range(10):
        workers.submit(job, n)
    for _ in range(5):  # loop iterations enough for every worker to start a job
        gevent.sleep(0)
    assert started == [0, 1, 2] and workers.busy == 10
    release.set()
    assert workers.join(timeout=5)
    assert started == list(range(10)) and most[0] == 3 and workers.busy == 0
    assert len(workers._workers) == 3  # the same three took every job


def test_done_is_called_after_each_job_even_when_it_fails():
    workers = Workers(2)
    done = []

    def job(n: int) -> None:
        if n == 1:
            raise ValueError("boom")

    for n in range(4):
        workers.submit(job, n, lambda n=n: done.append(n))
    assert workers.join(timeout=5)
    assert sorted(done) == [0, 1, 2, 3]
    assert len(workers._workers) <= 2


def test_join_times_out_while_a_job_runs():
    workers = Workers(1)
    workers.submit(gevent.sleep, 1)
    assert not workers.join(timeout=0.05)
    assert workers.join(timeout=5)


def test_close_ends_idle_workers_and_later_jobs_start_new_ones():
    workers = Workers(2)
    for _ in range(2):
        workers.submit(gevent.sleep, 0.01)
    assert workers.join(timeout=5)
    idle = list(workers._workers)
    workers.close()
    gevent.sleep(0)
    assert all(worker.dead for worker in idle)
    ran = []
    workers.submit(ran.append, "again")
    assert workers.join(timeout=5) and ran == ["again"]
