"""The floor of ``bench.services``: amphora's protocol for N services, done with nothing but the AMQP layer.

One process, the best case for the broker: every client publishes on one channel with confirms, every
server consumes all N request queues on one channel (prefetch per consumer) and publishes its replies on
one channel with confirms, acknowledging each request once its reply is confirmed, and all replies go to
one shared reply queue read on one channel. Messages are routed as amphora's are (the service's direct
request exchange, durable queues with a dead-letter exchange, mandatory, persistent unless transient, the
reply exchange by the client's id). What is left is what the broker must do: with N services, each request
is the only message in its queue. ``bench.services`` runs it beside amphora (``--floor``) to tell the
broker's share of the gap from the library's.
"""

from __future__ import annotations

import itertools
import uuid
from time import perf_counter

import gevent
from gevent.event import Event

from amphora.amqp import Channel, Message, Properties, connect
from bench.common import Result, timed

BODY = b'{"func": "add", "args": [1, 1], "kwargs": {}}'
REPLY = b'{"result": 2}'


def calls_per_second(url: str, count: int, seconds: float, in_flight: int, persistent: bool) -> Result:
    """``in_flight`` calls outstanding over ``count`` services in turn, for ``seconds``."""
    prefix = f"bench-floor-{uuid.uuid4().hex[:6]}-"
    connections = [connect(url) for _ in range(4)]  # publish requests, consume requests, reply, consume replies
    try:
        requests, serving, replying, replies = (connection.channel() for connection in connections)
        services = [f"{prefix}{i}" for i in range(count)]
        reply_queue, client_id = f"{prefix}replies", uuid.uuid4().hex
        _declare(requests, services, reply_queue, client_id)
        requests.confirm_select()
        replying.confirm_select()
        mode = 2 if persistent else 1
        in_turn = itertools.cycle(services)
        settled, started_calls, stopping, drained = 0, 0, False, Event()

        def call() -> None:
            service = next(in_turn)
            properties = Properties(
                delivery_mode=mode, message_id=uuid.uuid4().hex, reply_to=client_id, correlation_id=service
            )
            requests.basic_publish(BODY, f"rpc_{service}_request", "", properties, mandatory=True)

        def on_request(message: Message) -> None:
            properties = Properties(delivery_mode=mode, correlation_id=message.properties.message_id)
            exchange = f"rpc_{message.properties.correlation_id}_response"
            confirmation = replying.basic_publish(REPLY, exchange, str(message.properties.reply_to), properties, True)
            assert confirmation is not None
            confirmation.add_done_callback(lambda _: message.ack())

        def on_reply(message: Message) -> None:
            nonlocal settled
            message.ack()
            settled += 1
            if not stopping:
                call()
            elif settled == started_calls:
                drained.set()

        for service in services:
            serving.basic_qos(prefetch_count=in_flight)
            serving.basic_consume(f"rpc_{service}_request", on_request)
        replies.basic_qos(prefetch_count=1000)
        replies.basic_consume(reply_queue, on_reply)

        def run() -> tuple[float, int]:
            nonlocal started_calls, stopping
            started = perf_counter()
            for _ in range(in_flight):
                call()
            gevent.sleep(seconds)
            elapsed, counted = perf_counter() - started, settled
            started_calls, stopping = counted + in_flight, True
            if not drained.wait(60):
                raise RuntimeError("the floor's calls did not finish within 60 s")
            return counted / elapsed, started_calls

        result = timed(url, run)
        _delete(requests, services, reply_queue)
        return result
    finally:
        for connection in connections:
            connection.close()


def _declare(channel: Channel, services: list[str], reply_queue: str, client_id: str) -> None:
    """Each service's request and reply exchanges and request queue, and the shared reply queue's bindings."""
    channel.queue_declare(reply_queue, durable=True, arguments={"x-expires": 600_000})
    for service in services:
        request, response, dead = f"rpc_{service}_request", f"rpc_{service}_response", f"rpc_{service}_dead"
        channel.exchange_declare(request, "direct", durable=True)
        channel.exchange_declare(response, "direct", durable=True)
        channel.exchange_declare(dead, "headers", durable=True)
        channel.queue_declare(request, durable=True, arguments={"x-dead-letter-exchange": dead})
        channel.queue_bind(request, request, "")
        channel.queue_bind(reply_queue, response, client_id)


def _delete(channel: Channel, services: list[str], reply_queue: str) -> None:
    channel.queue_delete(reply_queue)
    for service in services:
        channel.queue_delete(f"rpc_{service}_request")
        for kind in ("request", "response", "dead"):
            channel.exchange_delete(f"rpc_{service}_{kind}")
