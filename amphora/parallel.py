"""Several calls at once: wait for every deferred result and get them in order."""

from __future__ import annotations

from typing import Any

import gevent
from gevent.event import AsyncResult


def parallel(*results: AsyncResult, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
    """The values of ``results`` (from ``client.defer``), in the order given, once all are ready.

    ``parallel(client.defer.add(1, 2), client.defer.div(1, 0), return_exceptions=True)`` gives
    ``[3, RemoteException('ZeroDivisionError', ...)]``. Without ``return_exceptions`` the first failure in
    order is raised, after every call has ended. ``timeout`` bounds the whole wait (gevent.Timeout).
    """
    with gevent.Timeout(timeout):
        for result in results:
            result.wait()
    values: list[Any] = []
    for result in results:
        if result.successful():
            values.append(result.value)
        elif return_exceptions:
            values.append(result.exception)
        else:
            raise result.exception
    return values
