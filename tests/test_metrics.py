"""Metrics hooks and the Prometheus exporter, on real calls."""

from __future__ import annotations

import pytest
from gevent.event import Event

from amphora import RemoteException
from amphora.metrics import Metrics, PrometheusMetrics
from helpers import wait_until

pytestmark = pytest.mark.timeout(60)


class Recorder(Metrics):
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.outboxes: dict[str, object] = {}

    def call_done(self, service, function, seconds, outcome):
        self.events.append(("call", function, outcome, seconds >= 0))

    def request_done(self, service, function, seconds, outcome):
        self.events.append(("request", function, outcome, seconds >= 0))

    def connected(self, link):
        self.events.append(("connected", link))

    def watch_outbox(self, link, depth):
        self.outboxes[link] = depth


def test_hooks_see_calls_requests_connections_and_outboxes(make_server, make_client):
    server_metrics, client_metrics = Recorder(), Recorder()
    server = make_server(metrics=server_metrics)
    server.add_function(lambda x: 1 / x, name="invert")
    server.serve()
    client = make_client(metrics=client_metrics)
    assert client.call.invert(2) == 0.5
    with pytest.raises(RemoteException):
        client.call.invert(0)
    wait_until(lambda: len([e for e in client_metrics.events if e[0] == "call"]) == 2)
    calls = [e for e in client_metrics.events if e[0] == "call"]
    assert calls == [("call", "invert", "ok", True), ("call", "invert", "RemoteException", True)]
    requests = [e for e in server_metrics.events if e[0] == "request"]
    assert requests == [("request", "invert", "ok", True), ("request", "invert", "ZeroDivisionError", True)]
    assert sum(e[0] == "connected" for e in client_metrics.events) == 2  # consumer and publisher links
    (depth,) = client_metrics.outboxes.values()
    wait_until(lambda: depth() == 0)  # the requests' confirms may come after their replies


def test_prometheus_exporter(make_server, make_client):
    prometheus = pytest.importorskip("prometheus_client")
    registry = prometheus.CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    server = make_server(metrics=metrics)
    release = Event()

    @server.add_function
    def wait() -> str:
        release.wait()
        return "done"

    server.serve()
    client = make_client(metrics=metrics)
    result = client.defer.wait()
    release.set()
    assert result.get(timeout=10) == "done"
    labels = {"service": client.service_name, "function": "wait", "outcome": "ok"}
    wait_until(lambda: registry.get_sample_value("amphora_call_seconds_count", labels) == 1)
    assert registry.get_sample_value("amphora_request_seconds_count", labels) == 1
    link = {"link": f"{client.service_name} client publisher"}
    wait_until(lambda: registry.get_sample_value("amphora_outbox_depth", link) == 0)
