"""Metrics hooks: what clients and servers report, and a Prometheus exporter of it.

Give ``metrics=`` to a client or server: an object with the methods of :class:`Metrics` (subclass it and
override what you need), or :class:`PrometheusMetrics` (needs the ``prometheus_client`` package; serve
its registry as usual, e.g. ``prometheus_client.start_http_server(8000)``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Metrics:
    """The hooks, all doing nothing. ``outcome`` is ``"ok"`` or the name of the exception class. A hook
    that raises is logged and otherwise ignored."""

    def call_done(self, service: str, function: str, seconds: float, outcome: str) -> None:
        """A client's call (or gather, or cast) ended, ``seconds`` after it was made."""

    def request_done(self, service: str, function: str, seconds: float, outcome: str) -> None:
        """A server ran a function for a request in ``seconds``."""

    def connected(self, link: str) -> None:
        """A connection of a client or server (``link`` names which) was set up, at start or after a loss."""

    def watch_outbox(self, link: str, depth: Callable[[], int]) -> None:
        """``depth()`` tells, whenever asked, how many messages wait in that link's outbox for a confirm."""


class PrometheusMetrics(Metrics):
    """Exports the hooks as Prometheus metrics ``amphora_*`` (calls, requests, latencies, connections,
    outbox depth) in ``registry`` (prometheus_client's default one unless given)."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client as prometheus

        options: dict[str, Any] = {} if registry is None else {"registry": registry}
        labels = ("service", "function", "outcome")
        self._calls = prometheus.Histogram(
            "amphora_call_seconds", "Calls made by clients, from call to result", labels, **options
        )
        self._requests = prometheus.Histogram(
            "amphora_request_seconds", "Requests handled by servers: time in the function", labels, **options
        )
        self._connections = prometheus.Counter(
            "amphora_connections", "Connections set up (at start and after each loss)", ("link",), **options
        )
        self._outbox = prometheus.Gauge(
            "amphora_outbox_depth", "Messages waiting for a publisher confirm", ("link",), **options
        )

    def call_done(self, service: str, function: str, seconds: float, outcome: str) -> None:
        self._calls.labels(service, function, outcome).observe(seconds)

    def request_done(self, service: str, function: str, seconds: float, outcome: str) -> None:
        self._requests.labels(service, function, outcome).observe(seconds)

    def connected(self, link: str) -> None:
        self._connections.labels(link).inc()

    def watch_outbox(self, link: str, depth: Callable[[], int]) -> None:
        self._outbox.labels(link).set_function(depth)


def safely(hook: Callable[..., None], *args: Any) -> None:
    """Call a metrics hook; a hook that fails is logged, never allowed to disturb the call or the link."""
    try:
        hook(*args)
    except Exception:
        log.exception("metrics hook %r failed", hook)


def outcome(error: BaseException | None) -> str:
    """``"ok"``, or the class name of the error."""
    return "ok" if error is None else type(error).__name__


def watch_links(metrics: Metrics, links: tuple[Any, ...], outbox_link: Any, outbox: Any) -> None:
    """Report every connection of ``links`` and the depth of ``outbox``."""
    for link in links:
        link.on_ready(lambda channel, name=link.name: safely(metrics.connected, name))
    metrics.watch_outbox(outbox_link.name, outbox.__len__)


def report_call(metrics: Metrics, service: str, function: str, result: Any, started: float) -> None:
    """Report a call when its AsyncResult settles."""
    result.rawlink(
        lambda settled: safely(
            metrics.call_done, service, function, time.monotonic() - started, outcome(settled.exception)
        )
    )
