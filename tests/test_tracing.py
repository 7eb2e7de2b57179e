"""OpenTelemetry tracing (amphora.tracing) on real calls, with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest
from gevent.event import Event

from amphora import AmqpRpcClient, AmqpRpcFanoutServer, AmqpRpcServer, HandlerTimeout, RemoteException
from amphora.hub_thread import gevent_wait
from amphora.tracing import Tracing
from helpers import wait_until

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

pytestmark = pytest.mark.timeout(60)
SpanKind = trace.SpanKind


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def stopped_at_the_end():
    """Stops what the test appends, at its end (for instances the service fixtures cannot make)."""
    made: list = []
    yield made
    for instance in made:
        instance.stop()


def spans_when(exporter: InMemorySpanExporter, count: int) -> list:
    """The finished spans, once there are ``count`` of them (a client span ends once its result settles)."""
    wait_until(lambda: len(exporter.get_finished_spans()) >= count)
    spans = list(exporter.get_finished_spans())
    assert len(spans) == count, [span.name for span in spans]
    return spans


def by_name(spans: list) -> dict:
    return {(span.name, span.kind): span for span in spans}


def test_a_nested_call_makes_one_trace_of_four_spans(amqp_url, service, provider, exporter, stopped_at_the_end):
    inner_service = f"{service}-inner"
    inner = AmqpRpcServer(inner_service, url=amqp_url, tracing=provider)
    stopped_at_the_end.append(inner)
    inner.add_function(lambda x: x * 2, name="double")
    inner.serve()
    inner_client = AmqpRpcClient(inner_service, url=amqp_url, tracing=provider)
    stopped_at_the_end.append(inner_client)
    outer = AmqpRpcServer(service, url=amqp_url, tracing=provider)
    stopped_at_the_end.append(outer)
    outer.add_function(lambda x: inner_client.call.double(x) + 1, name="work")
    outer.serve()
    client = AmqpRpcClient(service, url=amqp_url, tracing=provider)
    stopped_at_the_end.append(client)

    assert client.call.work(20) == 41

    spans = by_name(spans_when(exporter, 4))
    call = spans[f"{service}/work", SpanKind.CLIENT]
    handling = spans[f"{service}/work", SpanKind.SERVER]
    nested_call = spans[f"{inner_service}/double", SpanKind.CLIENT]
    nested_handling = spans[f"{inner_service}/double", SpanKind.SERVER]
    assert call.parent is None
    assert handling.parent.span_id == call.context.span_id
    assert nested_call.parent.span_id == handling.context.span_id
    assert nested_handling.parent.span_id == nested_call.context.span_id
    assert {span.context.trace_id for span in spans.values()} == {call.context.trace_id}
    assert all(span.status.is_ok for span in spans.values())
    assert call.attributes["rpc.system"] == "amphora"
    assert call.attributes["rpc.service"] == service
    assert call.attributes["rpc.method"] == "work"
    assert call.attributes["messaging.system"] == "rabbitmq"
    assert call.attributes["messaging.message.id"] == handling.attributes["messaging.message.id"]
    assert nested_handling.attributes["rpc.method"] == "double"


def test_a_call_inside_a_span_of_the_caller_is_its_child(make_server, make_client, provider, exporter):
    server = make_server(tracing=provider)
    server.add_function(lambda: None, name="noop")
    server.serve()
    client = make_client(tracing=provider)
    with provider.get_tracer("test").start_as_current_span("request") as outer:
        client.call.noop()
    spans = by_name(spans_when(exporter, 3))
    service = client.service_name
    assert spans[f"{service}/noop", SpanKind.CLIENT].parent.span_id == outer.context.span_id


def test_failures_mark_both_spans_with_the_error_type(make_server, make_client, provider, exporter):
    server = make_server(tracing=provider, time_limit=0.2)
    server.add_function(lambda x: 1 / x, name="invert")
    server.add_function(lambda: gevent.sleep(5), name="slow")
    server.serve()
    client = make_client(tracing=provider)
    with pytest.raises(RemoteException):
        client.call.invert(0)
    with pytest.raises(HandlerTimeout):
        client.call.slow()
    spans = by_name(spans_when(exporter, 4))
    service = client.service_name
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        failed = spans[f"{service}/invert", kind]
        assert failed.status.status_code == trace.StatusCode.ERROR
        assert failed.attributes["error.type"] == "ZeroDivisionError"
        assert spans[f"{service}/slow", kind].attributes["error.type"] == "HandlerTimeout"


def test_a_cast_is_a_producer_and_a_consumer_span(make_server, make_client, provider, exporter):
    server = make_server(tracing=provider)
    done = Event()
    server.add_function(lambda: done.set(), name="notify")
    server.serve()
    client = make_client(tracing=provider)
    client.cast.notify().get()
    assert done.wait(10)
    spans = by_name(spans_when(exporter, 2))
    service = client.service_name
    producer = spans[f"{service}/notify", SpanKind.PRODUCER]
    consumer = spans[f"{service}/notify", SpanKind.CONSUMER]
    assert consumer.parent.span_id == producer.context.span_id


def test_a_gather_has_one_server_span_per_fanout_server(
    amqp_url, service, make_fanout_client, provider, exporter, stopped_at_the_end
):
    for name in ("node1", "node2"):
        server = AmqpRpcFanoutServer(service, url=amqp_url, name=name, tracing=provider)
        stopped_at_the_end.append(server)
        server.add_function(lambda name=name: name, name="whoami")
        server.serve()
    client = make_fanout_client(tracing=provider)
    assert client.gather(timeout=10, expect=2).whoami() == {"node1": "node1", "node2": "node2"}
    spans = spans_when(exporter, 3)
    (gather,) = [span for span in spans if span.kind == SpanKind.CLIENT]
    handled = [span for span in spans if span.kind == SpanKind.SERVER]
    assert [span.parent.span_id for span in handled] == [gather.context.span_id] * 2


def test_a_thread_handler_runs_within_its_span(make_server, make_client, provider, exporter):
    outer = make_server(tracing=provider, threads=True)
    outer.add_function(lambda: trace.get_current_span().get_span_context().span_id, name="span_id")
    outer.serve()
    client = make_client(tracing=provider)
    handler_span_id = client.call.span_id()
    spans = by_name(spans_when(exporter, 2))
    service = client.service_name
    assert handler_span_id == spans[f"{service}/span_id", SpanKind.SERVER].context.span_id


def test_the_callers_headers_travel_with_the_trace_context(make_server, make_client, provider):
    server = make_server(tracing=provider)
    server.add_function(lambda context: dict(context.headers), name="headers", context=True)
    server.serve()
    client = make_client(tracing=provider)
    own = {"tenant": "a", "traceparent": "ignored: tracing puts the call's own"}
    headers = client.call(headers=own).headers()
    assert headers["tenant"] == "a"
    assert headers["traceparent"].startswith("00-")
    assert own["traceparent"].startswith("ignored")  # the caller's dict is left as it was


def test_a_foreign_trace_header_that_is_no_string_starts_a_new_trace(make_server, make_client, provider, exporter):
    server = make_server(tracing=provider)
    server.add_function(lambda: "ok", name="ping")
    server.serve()
    client = make_client()  # not tracing: its headers travel as given
    assert client.call(headers={"traceparent": 5, "tracestate": 1.5, "baggage": [1]}).ping() == "ok"
    (handled,) = spans_when(exporter, 1)
    assert handled.parent is None


def test_without_tracing_no_context_travels(make_server, make_client):
    server = make_server()
    server.add_function(lambda context: sorted(context.headers), name="headers", context=True)
    server.serve()
    client = make_client()
    assert client._tracing is None and server._tracing is None
    assert "traceparent" not in client.call.headers()


def test_off_imports_nothing_of_opentelemetry():
    program = (
        "import sys; from amphora import AmqpRpcClient, AmqpRpcServer;"
        "AmqpRpcServer('s'); AmqpRpcClient('s', autostart=False);"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    assert subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_tracing_without_opentelemetry_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"amphora-rpc\[otel\]"):
        Tracing()


def test_a_call_that_cannot_be_sent_ends_its_span_with_the_error(make_client, provider, exporter):
    client = make_client(tracing=provider)
    for send in (client.call.add, client.cast.add):
        with pytest.raises(TypeError):
            send(object())  # JSON cannot carry it: nothing is sent
    spans = spans_when(exporter, 2)
    assert all(span.status.status_code == trace.StatusCode.ERROR for span in spans)
    assert all(span.attributes["error.type"] == "TypeError" for span in spans)


def test_a_call_from_another_thread_ends_its_span(make_server, make_client, provider, exporter):
    server = make_server()
    server.add_function(lambda: "pong", name="ping")
    server.serve()
    client = make_client(tracing=provider)
    with ThreadPoolExecutor(1) as pool:  # goes through the client's twin in the hub thread
        assert gevent_wait(pool.submit(client.call.ping), 30) == "pong"
    (span,) = spans_when(exporter, 1)
    assert span.kind == SpanKind.CLIENT and span.status.status_code != trace.StatusCode.ERROR
