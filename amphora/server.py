"""AmqpRpcServer: runs registered functions for the requests of one service.

Each request is handled in one of ``concurrency`` worker greenlets (that is also the prefetch).
Its reply goes through the outbox; the request is acknowledged only once the broker confirmed the reply,
so a crash at any point before that gets the request redelivered. A bounded memory of answered request
ids answers such a redelivered request again without running the function twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from traceback import format_exception
from typing import Any, TypeVar, overload

import gevent
from gevent import GreenletExit
from gevent.event import Event

from . import exiting
from .amqp import Message
from .amqp.errors import NotFound
from .answered import AnsweredRequests, Reply
from .compression import (
    DEFAULT_MAX_SIZE,
    DEFAULT_THRESHOLD,
    BodyRefused,
    compress,
    decompress,
)
from .config import broker_parameters
from .describe import DESCRIBE, describe
from .exceptions import HandlerTimeout, IgnoreRequest
from .functions import FunctionRegistry, RequestContext, TimeLimitExceeded, checked_reply_headers, invoke
from .link import settle_quietly
from .metrics import Metrics, outcome, safely
from .protocol import (
    HANDLER_TIMEOUT,
    HEADER_CAST,
    HEADER_ERROR,
    WRONG_REQUEST,
    MalformedRequest,
    Serializer,
    decode_request,
    encode_exception,
    encode_result,
    make_serializer,
    past_deadline,
    refused_properties,
    reply_properties,
    serializer_for,
)
from .pubsub import PubSub
from .receiver import QueueReceiver
from .request_queues import RequestQueues
from .running import RunningRequests
from .topology import DEAD_LETTER_LIMIT, Declaration, ServiceTopology
from .tracing import TracingOption, tracing_for
from .transport import Transport
from .workers import Workers

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
MAX_CONCURRENCY = 65_535
"""The largest prefetch AMQP can carry (a short unsigned integer), so the most requests a server runs at once."""
IGNORE_BACKOFF = 1.0
"""Seconds a server waits before handing back a request it ignored (so no redelivery storm)."""


class AmqpRpcServer(PubSub, RequestQueues):
    """Serves the functions of ``service_name``; see the API documentation for every option."""

    fanout = False
    """Whether every server gets every request (:class:`~amphora.fanout.AmqpRpcFanoutServer`)."""
    coroutine_loop: asyncio.AbstractEventLoop | None = None
    """The event loop running the ``async def`` handlers: the application's while it hosts the server
    (:meth:`amphora.aio_server.AmqpRpcServer.serve`), else None for amphora's own (:mod:`amphora.coroutines`)."""

    def __init__(
        self,
        service_name: str,
        serializer: Serializer | type | None = None,
        *,
        url: str | None = None,
        urls: Sequence[str] | None = None,
        concurrency: int = 100,
        threads: bool = False,
        persistent: bool = True,
        answered_memory: int = 10_000,
        answered_memory_bytes: int = 64 * 1024 * 1024,
        stop_timeout: float = 30.0,
        exit_timeout: float | None = 10.0,
        name: str | None = None,
        time_limit: float | None = None,
        settings: Any = None,
        compress_threshold: int | None = DEFAULT_THRESHOLD,
        max_request_size: int = DEFAULT_MAX_SIZE,
        consume_default_queue: bool = True,
        max_priority: int | None = None,
        queue_type: str = "classic",
        dead_letter_limit: int | None = DEAD_LETTER_LIMIT,
        metrics: Metrics | None = None,
        tracing: TracingOption = False,
        tracebacks: bool = False,
        validate: bool = True,
        **connection_options: Any,
    ) -> None:
        self.service_name = service_name
        self._tracing = tracing_for(tracing)
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.serializer = make_serializer(serializer)
        self.topology = ServiceTopology(
            service_name,
            fanout=self.fanout,
            max_priority=max_priority,
            queue_type=queue_type,
            dead_letter_limit=dead_letter_limit,
        )
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"concurrency must be from 1 to {MAX_CONCURRENCY} (AMQP's prefetch limit), not {concurrency}"
            )
        self.concurrency = concurrency
        self.threads = threads
        self.persistent = persistent
        self.stop_timeout = stop_timeout
        self.exit_timeout = exit_timeout
        self.time_limit = time_limit
        self.settings = {} if settings is None else settings
        self.compress_threshold = compress_threshold
        self.max_request_size = max_request_size
        self.consume_default_queue = consume_default_queue
        self._functions = FunctionRegistry(validate)
        self._functions.add_reserved(DESCRIBE, lambda: describe(self))
        self._running = RunningRequests()
        self._answered = AnsweredRequests(answered_memory, answered_memory_bytes)
        self._workers = Workers(concurrency)  # several consumers may each have `concurrency` deliveries
        self._receivers: list[QueueReceiver] = []
        self._receivers_pruned_at = 0
        self._accepting = False  # from serve() until prepare_stop()
        self._stopped = Event()
        # while at most a quarter of the prefetch awaits the confirms of replies, those may be read in batches
        # (gathered acks may take another half: the broker never stops sending requests for want of acks)
        self.transport = transport = Transport(
            broker_parameters(url, urls, **connection_options),
            f"{service_name} server",
            prefetch=concurrency,
            outbox_patience=concurrency // 4,
        )
        self.metrics = metrics
        self.tracebacks = tracebacks
        if metrics is not None:
            transport.watch(metrics)
        transport.declare(self.topology.exchanges())
        transport.consumer.declare(self.topology.dead_letter_queue() + self._request_queue_declarations())
        self._consumer_ids: list[int] = []

    # --- what a fanout server changes -----------------------------------------------------------

    def _request_queue_declarations(self) -> list[Declaration]:
        """The request queue this server consumes, and its binding."""
        return self.topology.default_request_queue()

    @property
    def _request_queue(self) -> str:
        return self.topology.default_queue

    def _on_ignored(self, deliveries: list[Message]) -> None:
        """A handler raised IgnoreRequest: hand the request (every copy held) back, after a pause, for another
        server."""
        gevent.sleep(IGNORE_BACKOFF)
        for delivery in deliveries:
            settle_quietly(delivery.reject, True)

    # --- functions -----------------------------------------------------------------------------

    @overload
    def add_function(
        self,
        func: F,
        name: str | None = None,
        *,
        time_limit: float | None = None,
        context: bool = False,
        validate: bool | None = None,
        check_result: bool = False,
    ) -> F: ...

    @overload
    def add_function(
        self,
        func: str | None = None,
        name: str | None = None,
        *,
        time_limit: float | None = None,
        context: bool = False,
        validate: bool | None = None,
        check_result: bool = False,
    ) -> Callable[[F], F]: ...

    def add_function(
        self,
        func: Any = None,
        name: str | None = None,
        *,
        time_limit: float | None = None,
        context: bool = False,
        validate: bool | None = None,
        check_result: bool = False,
    ) -> Any:
        """Register a function for remote calls, under its own name or ``name``.

        Works as a call (``add_function(f)``, ``add_function(f, name="x")``), as a bare decorator, and as a
        decorator with a name (``@add_function("div")`` or ``@add_function(name="div")``). ``time_limit``
        (seconds) overrides the server's; with ``context=True`` the function gets a
        :class:`~amphora.functions.RequestContext` as its first argument. ``validate`` (the server's
        ``validate`` if None) converts the arguments by the function's type hints, refusing a mismatch;
        ``check_result`` checks the result against its return annotation (see :doc:`contracts`).
        """
        return self._functions.add(
            func, name, time_limit=time_limit, context=context, validate=validate, check_result=check_result
        )

    # --- running -------------------------------------------------------------------------------

    def serve(self, nowait: bool = True) -> None:
        """Connect and start serving. With ``nowait=False``, block until :meth:`stop`.

        Raises at once what reconnecting cannot fix (wrong password, unknown vhost, refused declaration).
        """
        self._accepting = True
        self._stopped.clear()
        exiting.running(self)
        if not self._consumer_ids and self.consume_default_queue:  # first start, or again after stop()
            consumer = self.transport.consumer
            self._consumer_ids = [
                consumer.add_consumer(self._request_queue, self._on_request, on_cancel=self._on_queue_deleted)
            ]
        self.transport.start("serving")
        if not nowait:
            self.join()

    @property
    def serving(self) -> bool:
        """True while the server takes requests: :meth:`serve` was called and :meth:`stop` was not, and it is
        connected on both sides (consuming, and able to publish replies). What ``amphora serve
        --health-port`` reports."""
        transport = self.transport
        return self._accepting and transport.consumer.ready.is_set() and transport.publisher.ready.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Block until the server is stopped; False if ``timeout`` passed first."""
        return self._stopped.wait(timeout)

    def serve_forever(
        self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM), on_ready: Callable[[], None] | None = None
    ) -> None:
        """The main loop of a server process: serve until one of ``signals`` arrives, then stop gracefully
        (:meth:`stop`). ``on_ready()`` runs once the server is consuming."""

        stopping: list[int] = []

        def on_signal(signum: int) -> None:
            if stopping:  # e.g. Ctrl-C reaches a supervised process directly and through its supervisor
                log.info("signal %d: already stopping", signum)
                return
            stopping.append(signum)
            log.info("signal %d: stopping (finishing running requests and sending their replies)", signum)
            self.stop()

        for signum in signals:
            gevent.signal_handler(signum, on_signal, signum)
        self.serve()
        if on_ready is not None and self._accepting:  # not if a signal stopped it while it connected
            on_ready()
        self.join()

    def prepare_stop(self) -> None:
        """Stop taking requests: cancel the consumers; requests that still arrive are handed back."""
        self._accepting = False
        for receiver in self._receivers:
            receiver.stop()
        self._receivers = []
        for consumer_id in self._consumer_ids:
            self.transport.consumer.remove_consumer(consumer_id)
        self._consumer_ids = []

    def receive_from_queue(
        self, queue: str, max_calls: int | None = None, timeout: float | None = None, block: bool = True
    ) -> QueueReceiver:
        """Also take requests from the per-key queue ``queue`` (a label, as given to the client's
        ``create_new_request_queue``), until ``max_calls`` requests were taken or ``timeout`` seconds passed.

        With ``block`` (the default), wait until then and until those requests were handled, and raise
        :class:`gevent.Timeout` if the timeout came before ``max_calls``. Without, return the
        :class:`~amphora.receiver.QueueReceiver` at once (``wait()``, ``stop()``, ``calls``). Raises
        ValueError if the queue does not exist. Several receivers may run at once; each survives reconnects.
        """
        name = self.topology.request_queue(queue)
        missing = f"no request queue {name!r}: create it first (create_new_request_queue)"
        if name not in self.transport.known_queues:  # else no need to ask: it was created here not long ago
            try:
                self.transport.consumer.execute(lambda channel: channel.queue_declare(name, passive=True))
            except NotFound:
                raise ValueError(missing) from None
        try:
            receiver = QueueReceiver(self.transport.consumer, name, self._on_request, max_calls, timeout)
        except NotFound:  # removed elsewhere since: the broker closed the link's channel, which reconnects
            self.transport.known_queues.forget(name)
            raise ValueError(missing) from None
        self._receivers.append(receiver)
        if len(self._receivers) > 2 * self._receivers_pruned_at + 100:  # forget finished ones, in amortized O(1)
            self._receivers = [r for r in self._receivers if not r.done]
            self._receivers_pruned_at = len(self._receivers)
        if block:
            receiver.wait()
        return receiver

    def stop(self) -> None:
        """Stop gracefully: no new requests, wait for running handlers and their replies, then disconnect.

        Waits at most ``stop_timeout`` seconds; requests not answered by then are redelivered later.
        """
        self._stop(self.stop_timeout)

    def _stop(self, timeout: float) -> None:
        """:meth:`stop`, waiting at most ``timeout`` seconds."""
        exiting.stopped(self)
        receivers = self._receivers
        self.prepare_stop()
        deadline = time.monotonic() + timeout
        self._workers.join(timeout=timeout)
        self.transport.outbox.flush(timeout=max(0.0, deadline - time.monotonic()))
        for receiver in receivers:  # their acks may wait for the cancel of their consumers
            receiver._done.wait(max(0.0, deadline - time.monotonic()))
        self._workers.close()
        self.transport.stop()
        self._stopped.set()

    _stop_at_exit = _stop  # what amphora.exiting calls, with the server's exit_timeout

    def _on_queue_deleted(self, consumer_tag: str) -> None:
        """The broker cancelled the request queue's consumer: the queue was deleted (by hand, a policy...).
        Reconnect, which declares it and its binding again and consumes it anew."""
        if self._accepting:
            log.warning(
                "%s: the request queue %s was deleted, with the requests in it; declaring it again",
                self.service_name,
                self._request_queue,
            )
            gevent.spawn(self.transport.consumer.reset)

    # --- requests ------------------------------------------------------------------------------

    def _on_request(self, message: Message) -> None:
        """A delivery (reader greenlet): answer from memory, join a running copy, or hand it to a worker.
        Every copy of a request that wants a reply gets its own, to its own ``reply_to``."""
        if not self._accepting:
            settle_quietly(message.reject, True)
            return
        request_id = message.properties.message_id
        if request_id:
            if self._running.join(request_id, message):
                return
            if request_id in self._answered:
                reply = self._answered.get(request_id)
                if reply is None:  # a cast that already ran
                    settle_quietly(message.ack)
                else:
                    self._answer(message, reply)
                return
            self._running.start(request_id, message)
        self._workers.submit(self._handle_or_hand_back, message)

    def _handle_or_hand_back(self, message: Message) -> None:
        """Handle a request (in a worker); if the handling itself dies (killed, or a bug), hand the request
        back to the broker rather than leave it unanswered."""
        owned = self._owned(message)
        if owned is None:
            return
        try:
            self._handle(owned)
        except BaseException:
            request_id = owned.properties.message_id
            for delivery in self._running.take_all(request_id, owned):
                settle_quietly(delivery.reject, True)
            raise

    def _owned(self, message: Message) -> Message | None:
        """The delivery to handle a request by, as a worker takes it: ``message`` itself, or, if the
        connection it came on is gone, a copy that came on an open one; None if there is none.

        A request whose connection is gone is not started: the broker has given it to another consumer,
        which may have answered it already (typically after a handler blocked this process past the
        heartbeat: see :meth:`~amphora.amqp.Connection.check_stall`). It is dropped without a word to the
        broker, which holds it for someone else.
        """
        message.channel.connection.check_stall()
        if message.channel.is_open:
            return message
        request_id = message.properties.message_id
        copy = self._running.first_open(request_id)
        if copy is None:
            log.debug("not starting request %s: the connection it came on is gone", request_id)
        return copy

    def _handle(self, message: Message) -> None:
        properties = message.properties
        request_id = str(properties.message_id or "")
        headers = properties.headers or {}
        cast = bool(headers.get(HEADER_CAST))
        try:
            if not request_id or not (properties.reply_to or cast):
                raise MalformedRequest("a request needs a message_id, and a reply_to unless it is a cast")
            if past_deadline(headers):
                for delivery in self._running.take_all(request_id, message):  # and every copy that joined it
                    if delivery.redelivered:  # it may have run before: dropped, its caller ends with NoResult
                        settle_quietly(delivery.ack)
                    else:  # dead-lettered back to its caller: it never ran
                        settle_quietly(delivery.reject, False)
                return
            serializer = serializer_for(properties.content_type, self.serializer)
            if serializer is None:
                raise MalformedRequest(f"unsupported content type {properties.content_type!r}")
            body = decompress(message.body, properties.content_encoding, self.max_request_size)
            func_name, args, kwargs = decode_request(serializer, body)
            function = self._functions.get(func_name)
            if function is None:
                suggestion = self._functions.did_you_mean(func_name)
                raise MalformedRequest(f"no function {func_name!r} in service {self.service_name!r}{suggestion}")
            if function.validator is not None:
                args, kwargs = function.validator.arguments(args, kwargs)
        except (MalformedRequest, BodyRefused) as exc:
            self._refuse(message, str(exc))
            return
        context = RequestContext(request_id, func_name, headers, self) if function.context else None
        error_header = None
        failure: BaseException | None = None
        started = time.monotonic()
        run = invoke
        if self._tracing is not None:  # the handler runs in the request's span
            run = self._tracing.handle(self.service_name, func_name, request_id, headers, cast)
        try:
            result = run(function, args, kwargs, context, self.threads, self.time_limit, self.coroutine_loop)
            body = encode_result(serializer, result)
        except IgnoreRequest:
            self._on_ignored(self._running.take_all(request_id, message))
            return
        except TimeLimitExceeded as exc:
            failure = HandlerTimeout(*exc.args)  # as the caller sees it
            body = encode_exception(serializer, "HandlerTimeout", exc.args)
            error_header = {HEADER_ERROR: HANDLER_TIMEOUT}
        except GreenletExit:
            raise
        except BaseException as exc:  # a handler's own gevent.Timeout or SystemExit is its failure too
            failure = exc
            trace = "".join(format_exception(exc)) if self.tracebacks else None
            body = encode_exception(serializer, type(exc).__name__, exc.args, trace)
        if self.metrics is not None:
            seconds = time.monotonic() - started
            safely(self.metrics.request_done, self.service_name, func_name, seconds, outcome(failure))
        if cast:
            if failure is not None:
                log.warning("cast of %s failed: %r", func_name, failure)
            self._finish_cast(message, request_id)
        else:
            reply_headers = dict(error_header or {})
            if context is not None and context.reply_headers:
                try:
                    reply_headers = {**checked_reply_headers(context), **reply_headers}
                except ValueError as exc:
                    body = encode_exception(serializer, "TypeError", exc.args)
            self._reply(message, body, serializer, reply_headers)

    def _finish_cast(self, message: Message, request_id: str) -> None:
        """A cast wants no reply: remember it ran, and acknowledge it."""
        self._answered.remember(request_id, None)
        for delivery in self._running.take_all(request_id, message):
            settle_quietly(delivery.ack)

    def _reply(
        self, message: Message, body: bytes, serializer: Serializer, headers: dict[str, Any] | None = None
    ) -> None:
        """Answer a request: remember the reply, and publish it to every copy of the request held."""
        # never None here: _handle and _refuse only reply to requests that carry a message_id
        request_id: str = message.properties.message_id  # type: ignore[assignment]
        body, encoding = compress(body, self.compress_threshold)
        properties = reply_properties(
            request_id=request_id,
            server_name=self.name,
            content_type=serializer.content_type,
            content_encoding=encoding,
            persistent=self.persistent,
            headers=headers,
        )
        reply = Reply(body, properties)
        self._answered.remember(request_id, reply)  # from now on, a copy that arrives is answered from memory
        for delivery in self._running.take_all(request_id, message):
            self._answer(delivery, reply)

    def _answer(self, delivery: Message, reply: Reply) -> None:
        """Publish ``reply`` to the caller of ``delivery`` (its own ``reply_to``); acknowledge the delivery
        once the broker confirmed the reply. A copy without ``reply_to`` (sent as a cast) is acknowledged."""
        reply_to = delivery.properties.reply_to
        if not reply_to:
            settle_quietly(delivery.ack)
            return

        def on_confirmed(error: BaseException | None) -> None:
            if error is not None:
                request_id = reply.properties.correlation_id
                log.warning("reply to %s could not be delivered (%s): its caller is gone", request_id, error)
            settle_quietly(delivery.ack)

        self.transport.outbox.publish(
            self.topology.response_exchange,
            reply_to,
            reply.body,
            reply.properties,
            mandatory=True,
            on_done=on_confirmed,
            quiet=True,  # its request is acknowledged after it: the outbox's patience keeps the prefetch open
        )

    def _refuse(self, message: Message, reason: str) -> None:
        """Dead-letter a request the server cannot take, with the reason; tell its caller if possible."""
        log.warning("refusing a request to %s: %s", self.service_name, reason)
        properties = message.properties
        dead = refused_properties(properties, reason)
        can_reply = bool(properties.message_id and properties.reply_to)

        def on_dead_lettered(error: BaseException | None) -> None:
            if not can_reply:  # a cast: acknowledged with every copy held, once its dead letter is safe
                for delivery in self._running.take_all(properties.message_id, message):
                    settle_quietly(delivery.ack)

        self.transport.outbox.publish(self.topology.dead_exchange, "", message.body, dead, on_done=on_dead_lettered)
        if can_reply:
            serializer = serializer_for(properties.content_type, self.serializer) or self.serializer
            body = encode_exception(serializer, "WrongRequest", (reason,))
            self._reply(message, body, serializer, {HEADER_ERROR: WRONG_REQUEST})
