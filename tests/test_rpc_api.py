"""The RPC API against a real broker: server and client in this process, one fresh service per test."""

from __future__ import annotations

import threading
import time
import uuid

import gevent
import pytest
from gevent.event import Event

from amphora import (
    AmqpRpcClient,
    AmqpRpcServer,
    NoResult,
    RemoteException,
    RequestExpired,
    RequestMayHaveRun,
    Unroutable,
    WrongRequest,
    WrongResult,
)
from amphora.amqp import Properties, connect
from amphora.amqp.errors import AuthenticationError, NotFound, VhostNotAllowed
from amphora.protocol import HEADER_CLIENT
from helpers import Occupancy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def amqp_url(any_broker_url: str) -> str:
    """Every test here runs on the RabbitMQ node and on the in-process broker (memory://)."""
    return any_broker_url


@pytest.fixture
def math_server(make_server):
    server = make_server()

    def add(x, y):
        return x + y

    def subtract(x, y):
        return x - y

    server.add_function(add)
    server.add_function(subtract, name="sub")

    @server.add_function
    def multiply(x, y):
        return x * y

    @server.add_function("div")
    def divide(x, y):
        return x / y

    @server.add_function(name="send_message.email.text")
    def text(address, body):
        return f"to {address}: {body}"

    @server.add_function
    def fail(*args):
        raise ValueError(*args)

    @server.add_function
    def unserializable():
        return object()

    server.serve()
    return server


def test_documented_math_calls(math_server, make_client):
    client = make_client()  # the first call right after construction works: no sleep
    assert client.call.add(2, 3) == 5
    assert client.call.sub(10, 3) == 7
    assert client.call.multiply(5, 5) == 25
    assert client.call.div(64, 16) == 4


def test_defer_returns_async_results(math_server, make_client):
    client = make_client()
    results = [client.defer.add(i, i) for i in range(200)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(200)]


def test_dotted_names_and_function_name_option(math_server, make_client):
    client = make_client()
    assert client.call.send_message.email.text("root@example.com", "hi") == "to root@example.com: hi"
    sender = client.defer.send_message.email
    assert sender.text("a@b", "x").get(timeout=5) == "to a@b: x"
    assert client.call(function_name="send_message.email.text")("c@d", "y") == "to c@d: y"
    assert client.defer(function_name="add")(1, 1).get(timeout=5) == 2


def test_keyword_arguments_pass_through_even_named_like_options(make_server, make_client):
    server = make_server()
    server.add_function(lambda timeout, routing_key: [timeout, routing_key], name="echo")
    server.serve()
    assert make_client().call.echo(timeout=1, routing_key="k") == [1, "k"]


def test_remote_exception_carries_type_and_args(math_server, make_client):
    client = make_client()
    with pytest.raises(RemoteException) as info:
        client.call.fail("x", -5)
    assert info.value.error_type == "ValueError" and info.value.args == ("x", -5)
    with pytest.raises(RemoteException) as info:
        client.call.div(10, 0)
    assert info.value.error_type == "ZeroDivisionError"
    with pytest.raises(RemoteException, match="TypeError"):
        client.call.unserializable()


def test_unknown_function_is_a_wrong_request_and_is_dead_lettered(math_server, make_client, amqp_url, service):
    client = make_client()
    with pytest.raises(WrongRequest, match="no function 'nope'"):
        client.call.nope(1)
    channel = connect(amqp_url).channel()
    for _ in range(100):  # the dead-lettering is confirmed asynchronously
        if channel.queue_declare(f"rpc_{service}_dead", passive=True).message_count:
            break
        gevent.sleep(0.02)
    assert channel.queue_declare(f"rpc_{service}_dead", passive=True).message_count == 1
    assert client.call.add(1, 1) == 2  # and the server goes on serving


def test_call_options_are_checked(math_server, make_client):
    client = make_client()
    with pytest.raises(TypeError, match="name the function first"):
        client.defer("http://example.com")
    with pytest.raises(TypeError, match="unknown call option"):
        client.call(wait_publish=True)
    assert client.call(timeout=5).add(1, 2) == 3
    assert client.defer(timeout=5, wait_publish=True).add(2, 2).get(timeout=5) == 4


def test_slow_handler_gives_no_result_after_the_timeout(make_server, make_client):
    server = make_server()
    release = Event()
    server.add_function(lambda: release.wait(), name="hang")
    server.serve()
    client = make_client()
    started = time.monotonic()
    with pytest.raises(NoResult) as info:
        client.call(timeout=0.5).hang()
    assert not isinstance(info.value, RequestExpired)  # the server took it: not expired
    assert 0.5 <= time.monotonic() - started < 2
    release.set()


def test_request_nobody_takes_expires_and_says_so(make_client):
    client = make_client()  # no server at all; but a server that died in its handler would look the same
    with pytest.raises(RequestMayHaveRun, match="no server answered .* dead-lettered the request \\(expired\\)"):
        client.call(timeout=0.5).add(1, 2)


def test_calls_made_before_any_server_wait_and_are_answered(make_client, make_server):
    client = make_client()
    results = [client.defer.add(i, 1) for i in range(20)]
    gevent.sleep(0.3)  # the requests sit in the service's queue: no server exists yet
    assert not any(r.ready() for r in results)
    server = make_server()
    server.add_function(lambda x, y: x + y, name="add")
    server.serve()
    assert [r.get(timeout=10) for r in results] == [i + 1 for i in range(20)]


def test_unroutable_routing_key_fails_at_once(math_server, make_client):
    client = make_client()
    started = time.monotonic()
    with pytest.raises(Unroutable, match="no-such-user"):
        client.call(routing_key="no-such-user").add(1, 2)
    assert time.monotonic() - started < 2


def test_tune_function_chooses_the_routing_key(math_server, make_client):
    client = make_client()
    seen = []

    @client.tune_function("add")
    def route(args, kwargs):
        seen.append((args, kwargs))
        return {"routing_key": "ghost", "queue": "ignored"}

    with pytest.raises(Unroutable, match="ghost"):
        client.call.add(1, 2)
    assert seen == [((1, 2), {})]
    assert client.call(routing_key="").add(1, 2) == 3  # an explicit routing key wins
    client.tune_function("add", lambda args, kwargs: "")
    assert client.call.add(2, 2) == 4


def test_malformed_reply_is_wrong_result(make_server, make_client, amqp_url, service):
    server = make_server()
    server.add_function(lambda: gevent.sleep(5), name="slow")
    server.serve()
    client = make_client()
    result = client.defer.slow()
    request_id = next(iter(client._pending))
    channel = connect(amqp_url).channel()
    channel.basic_publish(b"{not json", f"rpc_{service}_response", client.uuid, Properties(correlation_id=request_id))
    with pytest.raises(WrongResult):
        result.get(timeout=5)


def test_duplicate_request_runs_once(make_server, make_client, amqp_url, service):
    server = make_server()
    runs = []
    server.add_function(lambda x: runs.append(x) or len(runs), name="count")
    server.serve()
    client = make_client()
    assert client.call.count(1) == 1
    # one request delivered twice, as a redelivery after a lost ack brings it: it must run once
    request = client.serializer.dumps({"func": "count", "args": [2], "kwargs": {}})
    channel = connect(amqp_url).channel()
    channel.confirm_select()
    properties = Properties(message_id=uuid.uuid4().hex, reply_to=client.uuid, content_type="application/json")
    for _ in range(2):
        channel.basic_publish(request, f"rpc_{service}_request", "", properties).wait()
    assert client.call.count(3) == 3  # the client dropped the two replies it never asked for
    assert runs == [1, 2, 3]


def test_concurrency_is_bounded(make_server, make_client):
    server = make_server(concurrency=2)
    work = Occupancy(0.1)
    server.add_function(work, name="work")
    server.serve()
    client = make_client()
    results = [client.defer.work() for _ in range(8)]
    for r in results:
        r.get(timeout=10)
    assert work.peak == 2


def test_blocking_handlers_run_in_threads(make_server, make_client):
    server = make_server(threads=True, concurrency=4)
    threads = set()

    def blocking(seconds):
        threads.add(threading.get_ident())
        time.sleep(seconds)  # not gevent-aware: would freeze the hub without threads=True
        return seconds

    server.add_function(blocking)
    server.serve()
    client = make_client()
    started = time.monotonic()
    results = [client.defer.blocking(0.3) for _ in range(4)]
    assert [r.get(timeout=10) for r in results] == [0.3] * 4
    assert time.monotonic() - started < 1.0  # ran side by side
    assert threading.get_ident() not in threads


@pytest.mark.rabbitmq_only("amqp_host/amqp_port keywords and a refusing port are about network brokers")
def test_connection_settings_from_keywords_and_environment(amqp_url, service, monkeypatch, math_server):
    from amphora.amqp import ConnectionParameters

    params = ConnectionParameters.from_url(amqp_url)
    client = AmqpRpcClient(
        service, amqp_host=params.host, amqp_port=params.port, amqp_user="guest", amqp_password="guest"
    )
    assert client.call.add(1, 1) == 2
    client.stop()
    monkeypatch.setenv("AMQP_URL", amqp_url)
    client = AmqpRpcClient(service)
    assert client.call.add(2, 1) == 3
    client.stop()
    client = AmqpRpcClient(service, urls=[amqp_url.replace(str(params.port), "1"), amqp_url])
    assert client.call.add(3, 1) == 4  # the first URL refuses: the second one serves
    client.stop()


@pytest.mark.rabbitmq_only("the memory broker has no users and no virtual hosts")
def test_wrong_credentials_and_vhost_are_raised_by_the_constructor(amqp_url, service):
    with pytest.raises(AuthenticationError):
        AmqpRpcClient(service, url=amqp_url.replace("guest:guest", "guest:nope"))
    with pytest.raises(VhostNotAllowed):
        AmqpRpcServer(service, url=amqp_url.rsplit("/", 1)[0] + "/nowhere").serve()


def test_msgpack_serializer(make_server, make_client):
    from amphora import MsgpackSerializer

    server = make_server(serializer=MsgpackSerializer)
    server.add_function(lambda data: data[::-1], name="reverse")
    server.serve()
    assert make_client(serializer=MsgpackSerializer).call.reverse(b"abc") == b"cba"
    assert make_client().call.reverse("abc") == "cba"  # a JSON client talks to the same server


def test_request_queued_behind_a_busy_server_expires(make_server, make_client):
    server = make_server(concurrency=1)
    server.add_function(lambda seconds: gevent.sleep(seconds), name="busy")
    server.serve()
    client = make_client()
    busy = client.defer.busy(1.0)
    with pytest.raises(RequestMayHaveRun):  # expired in the queue: the broker cannot tell it never ran
        client.call(timeout=0.3).busy(0)
    busy.get(timeout=5)


def test_server_never_starts_a_request_past_its_deadline(make_server, make_client, amqp_url, service):
    server = make_server(concurrency=1)
    runs = []
    server.add_function(lambda tag: runs.append(tag), name="record")
    server.serve()
    client = make_client()
    channel = connect(amqp_url).channel()
    channel.confirm_select()
    late = Properties(
        message_id=uuid.uuid4().hex,
        reply_to=client.uuid,
        content_type="application/json",
        headers={"x-amphora-deadline": int(time.time() * 1000) - 1000, HEADER_CLIENT: client.uuid},
    )
    body = client.serializer.dumps({"func": "record", "args": ["late"], "kwargs": {}})
    channel.basic_publish(body, f"rpc_{service}_request", "", late).wait()
    client.call.record("on time")  # served after the late one (one at a time, in order)
    assert runs == ["on time"]


def test_expired_request_goes_back_to_its_caller_only(make_client, amqp_url, service):
    caller, bystander = make_client(), make_client()  # they share a reply queue
    reached_bystander = []
    bystander.on_reply = reached_bystander.append
    with pytest.raises(RequestMayHaveRun):
        caller.call(timeout=0.3).add(1, 2)  # no server: the request expires and is dead-lettered
    assert reached_bystander == []
    channel = connect(amqp_url).channel()
    with pytest.raises(NotFound):  # nor to the refusals' queue, which only servers declare
        channel.queue_declare(f"rpc_{service}_dead", passive=True)
