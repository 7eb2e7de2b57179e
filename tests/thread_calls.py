"""Calls from many OS threads of a process, for tests/test_threads.py.

``python thread_calls.py SERVICE URL MODE THREADS CALLS``

MODE ``plain``: a process gevent does not patch (a threaded web app); the threads are a ThreadPoolExecutor's.
MODE ``patched``: ``monkey.patch_all()`` first; the threads are real ones, from gevent's thread pool.
The client is made in the main thread; each thread makes CALLS calls ``add(thread * 100000 + i, i)``, every
other one with ``defer`` and a ``.get``, and one ``cast``. Prints ``{"correct": N, "wrong": [...],
"real_threads": bool}`` as JSON.
"""

from __future__ import annotations

import sys

if sys.argv[3] == "patched":
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import gevent  # noqa: E402

from amphora import AmqpRpcClient  # noqa: E402
from amphora.hub_thread import get_ident  # noqa: E402


def main() -> None:
    service, url, mode, threads, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    client = AmqpRpcClient(service, url=url, timeout=60)
    main_thread = get_ident()

    def work(thread: int) -> tuple[list[object], bool]:
        wrong: list[object] = []
        for i in range(calls):
            x = thread * 100000 + i
            try:
                result = client.call.add(x, i) if i % 2 else client.defer.add(x, i).get(timeout=60)
            except Exception as exc:  # noqa: BLE001 - counted as wrong
                result = repr(exc)
            if result != x + i:
                wrong.append([x, i, result])
        client.cast.add(thread, 0).get(timeout=60)
        return wrong, get_ident() != main_thread

    if mode == "patched":
        pool = gevent.get_hub().threadpool
        pool.maxsize = threads
        outcomes = [r.get() for r in [pool.spawn(work, t) for t in range(threads)]]
    else:
        with ThreadPoolExecutor(threads) as executor:
            outcomes = list(executor.map(work, range(threads)))
    wrong = [w for ws, _ in outcomes for w in ws]
    print(json.dumps({"correct": threads * calls - len(wrong), "wrong": wrong[:10],
                      "real_threads": all(real for _, real in outcomes)}))  # fmt: skip


main()
