"""AmqpRpcClient: calls the functions of a service, blocking (``call``) or not (``defer``).

Requests go through the outbox (kept until the broker confirms them, published again after a reconnect)
as persistent, mandatory messages whose expiration is the call's timeout. Replies come to the durable reply
queue that the clients of the process share (:mod:`amphora.replies`), which outlives a lost connection;
replies nobody waits for any more are dropped.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid as uuid_module
from collections.abc import Callable, Sequence
from typing import Any

from gevent.event import AsyncResult, Event

from . import exiting
from .amqp import Connection, Message
from .compression import (
    DEFAULT_MAX_SIZE,
    DEFAULT_THRESHOLD,
    BodyRefused,
    compress,
    decompress,
)
from .config import broker_parameters
from .exceptions import (
    AmphoraError,
    HandlerTimeout,
    RemoteException,
    ReplyQueueLost,
    WrongRequest,
    WrongResult,
)
from .metrics import Metrics, report_call
from .pending import PendingCall, PendingCalls, publish_error
from .protocol import (
    HANDLER_TIMEOUT,
    HEADER_ERROR,
    HEADER_SERVER,
    RESERVED_HEADER_PREFIXES,
    WRONG_REQUEST,
    Serializer,
    death,
    decode_reply,
    encode_request,
    make_serializer,
    request_properties,
)
from .pubsub import PubSub
from .replies import REPLY_PREFETCH, shared_replies
from .request_queues import RequestQueues
from .threaded import AnyThread
from .topology import DEFAULT_ROUTING_KEY, ServiceTopology
from .tracing import TracingOption, tracing_for
from .transport import Transport

log = logging.getLogger(__name__)

Tuner = Callable[[tuple[Any, ...], dict[str, Any]], "str | dict[str, str]"]
_AMPHORA_ERRORS: dict[str, type[AmphoraError]] = {WRONG_REQUEST: WrongRequest, HANDLER_TIMEOUT: HandlerTimeout}
"""The exception for each ``x-amphora-error`` header value of a reply."""
CALL_OPTIONS = frozenset({"timeout", "routing_key", "priority", "headers"})
"""Options of ``client.call(...)``, ``client.cast(...)`` and (with ``wait_publish``) ``client.defer(...)``."""


class RequestIds:
    """Unique request ids, cheaply: a random prefix per client instance and a counter.

    The prefix is new for every instance (even with a fixed client ``uuid``), so a restarted client never
    reuses an id that a server still remembers as answered.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = uuid_module.uuid4().hex[:20]
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


class Caller:
    """``client.call`` / ``client.defer``: attribute access names the function, calling it calls it.

    ``client.call.send_message.email.text(...)`` calls ``"send_message.email.text"``. Calling the bare helper
    with options (``function_name``, ``timeout``, ``routing_key``, and for ``defer`` ``wait_publish``) returns
    a helper with those options: ``client.call(timeout=5).add(1, 2)``.
    """

    __slots__ = ("_allowed", "_invoke", "_name", "_options")

    def __init__(
        self,
        invoke: Callable[..., Any],
        allowed: frozenset[str],
        name: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self._invoke = invoke
        self._allowed = allowed
        self._name = name
        self._options = options or {}

    def __getattr__(self, name: str) -> Caller:
        if name.startswith("__"):
            raise AttributeError(name)
        full_name = f"{self._name}.{name}" if self._name else name
        return Caller(self._invoke, self._allowed, full_name, self._options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._name is not None:
            return self._invoke(self._name, args, kwargs, **self._options)
        if args:
            raise TypeError("name the function first: client.call.fn(...) or client.call(function_name='fn')(...)")
        unknown = set(kwargs) - self._allowed - {"function_name"}
        if unknown:
            raise TypeError(f"unknown call option(s): {', '.join(sorted(unknown))}")
        name = kwargs.pop("function_name", None)
        return Caller(self._invoke, self._allowed, name, {**self._options, **kwargs})


class AmqpRpcClient(PubSub, RequestQueues, AnyThread):
    """Calls the functions of ``service_name``; see the API documentation for every option."""

    fanout = False
    """Whether requests are broadcast to every server (:class:`~amphora.fanout.AmqpRpcFanoutClient`)."""

    def __init__(
        self,
        service_name: str,
        uuid: str | None = None,
        serializer: Serializer | type | None = None,
        timeout: float = 60,
        autostart: bool = True,
        *,
        url: str | None = None,
        urls: Sequence[str] | None = None,
        persistent: bool = True,
        reply_queue_expires: float = 600.0,
        outbox_limit: int = 100_000,
        outbox_block: bool = True,
        compress_threshold: int | None = DEFAULT_THRESHOLD,
        max_reply_size: int = DEFAULT_MAX_SIZE,
        max_priority: int | None = None,
        queue_type: str = "classic",
        metrics: Metrics | None = None,
        tracing: TracingOption = False,
        exit_timeout: float | None = 10.0,
        **connection_options: Any,
    ) -> None:
        self.service_name = service_name
        self._tracing = tracing_for(tracing)
        self.exit_timeout = exit_timeout
        self.uuid = uuid or uuid_module.uuid4().hex
        self._request_ids = RequestIds()
        self.serializer = make_serializer(serializer)
        self.timeout = timeout
        self.persistent = persistent
        self.compress_threshold = compress_threshold
        self.max_reply_size = max_reply_size
        self.topology = ServiceTopology(
            service_name,
            int(reply_queue_expires * 1000),
            fanout=self.fanout,
            max_priority=max_priority,
            queue_type=queue_type,
        )
        self._pending = PendingCalls(self._no_broker)
        self._tuners: dict[str, Tuner] = {}
        self._stopped = Event()
        parameters = broker_parameters(url, urls, **connection_options)
        self.transport = transport = Transport(
            parameters,
            f"{service_name} client",
            prefetch=REPLY_PREFETCH,  # for subscriptions
            outbox_limit=outbox_limit,
            outbox_block=outbox_block,
        )
        self.metrics = metrics
        if metrics is not None:
            transport.watch(metrics)
        shared = self.topology.exchanges()
        if not self.fanout:  # calls made before any server starts wait in the service's queue
            shared += self.topology.default_request_queue()
        transport.declare(shared)
        own_queue = self.topology.own_reply_queue(uuid) if uuid else None
        self._replies = shared_replies(parameters, self.topology, own_queue)
        self.reply_queue = self._replies.queue
        """The reply queue this client shares with the others of its process (:mod:`amphora.replies`)."""
        self._replies.add(self)
        transport.publisher.on_connected(self._wait_for_reply_queue)
        self.call = Caller(self._any_thread("call", self._call), CALL_OPTIONS)
        self.defer = Caller(self._any_thread("defer", self._defer), CALL_OPTIONS | {"wait_publish"})
        self.cast = Caller(self._any_thread("cast", self._cast), CALL_OPTIONS)
        if autostart:
            self.serve()

    # --- lifecycle -----------------------------------------------------------------------------

    def serve(self, nowait: bool = True) -> None:
        """Connect (calls made before the broker answers wait in the outbox).

        Raises at once what reconnecting cannot fix (wrong password, unknown vhost, refused declaration).
        With ``nowait=False``, block until :meth:`stop`.
        """
        self._stopped.clear()
        exiting.running(self)
        self._replies.start(self)
        started = time.monotonic()
        try:
            self.transport.start("calling")
            self._replies.wait_tried(started)
        except BaseException:
            self._replies.stop(self)
            raise
        if not nowait:
            self._stopped.wait()

    def stop(self) -> None:
        """Disconnect. Unconfirmed requests stay in the outbox until :meth:`serve`; pending calls keep
        their timeouts."""
        exiting.stopped(self)
        self._stop_twin()
        self.transport.stop()
        self._replies.stop(self)
        self._stopped.set()

    def stop_consumer(self) -> None:
        """Disconnect the consuming side; replies wait in the reply queue unless another client of the process
        keeps consuming it (it then hands them to this client)."""
        self._replies.stop(self)
        super().stop_consumer()

    def _stop_at_exit(self, timeout: float) -> None:
        """At interpreter exit (:mod:`amphora.exiting`): wait up to ``timeout`` seconds for the broker to
        confirm what the outbox holds (requests, casts, events), then :meth:`stop`."""
        self.transport.outbox.flush(timeout)
        self.stop()

    def _watches_results(self) -> bool:
        """Whether something watches the AsyncResult of every call (metrics, tracing), so it must be set."""
        return self.metrics is not None or self._tracing is not None

    def _no_broker(self) -> str | None:
        """Why the client has no broker connection, while it cannot get one (None if it has one)."""
        return self.transport.unreachable()

    # --- calls ---------------------------------------------------------------------------------

    def tune_function(self, func_name: str, tuner: Tuner | None = None) -> Any:
        """Set how the routing key of calls to ``func_name`` is chosen from their arguments.

        ``tuner(args, kwargs)`` returns the routing key, or a dict with ``"routing_key"`` (a ``"queue"``
        key is accepted and ignored, as in the original). Usable as ``tune_function(name, tuner)`` or as a
        decorator ``@client.tune_function(name)``. An explicit ``routing_key=`` on a call wins.
        """
        if tuner is None:
            return lambda f: self.tune_function(func_name, f)
        self._tuners[func_name] = tuner
        return tuner

    def _routing_key(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        tuner = self._tuners.get(func_name)
        if tuner is None:
            return DEFAULT_ROUTING_KEY
        key = tuner(args, kwargs)
        if isinstance(key, dict):
            key = key["routing_key"]
        return str(key)

    def _call(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any:
        return self._request(func_name, args, kwargs, **options).get()

    def _defer(self, func_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> AsyncResult:
        return self._request(func_name, args, kwargs, **options)

    def _request(
        self,
        func_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        wait_publish: bool = False,
        make_pending: Callable[[str, float], PendingCall] = PendingCall,
        **options: Any,
    ) -> AsyncResult:
        """Publish a request and return the AsyncResult of its reply."""
        self._check_options(options)
        timeout = self.timeout if timeout is None else timeout
        request_id = self._request_ids.next()
        pending = make_pending(func_name, timeout)
        self._pending.add(request_id, pending)
        if self.metrics is not None:
            report_call(self.metrics, self.service_name, func_name, pending.result, time.monotonic())
        if self._tracing is not None:
            options = self._tracing.call(self.service_name, func_name, request_id, options, pending.result, False)
        on_published = pending.published
        published = Event() if wait_publish else None
        if published is not None:

            def on_published(error: BaseException | None) -> None:
                pending.published(error)
                published.set()

        try:
            quiet = not wait_publish  # the reply tells the caller more than the confirm
            self._publish_request(request_id, func_name, args, kwargs, timeout, on_published, quiet=quiet, **options)
        except BaseException as exc:  # e.g. arguments the serializer cannot encode: the call never started
            self._pending.pop(request_id)
            pending.result.set_exception(exc)  # for whoever watches it (metrics, tracing): raised here too
            raise
        if published is not None:
            published.wait()
        return pending.result

    def _cast(
        self,
        func_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Publish a request that wants no reply; the AsyncResult is set (to None) once the broker has it."""
        self._check_options(options)
        confirmed = AsyncResult()
        request_id = self._request_ids.next()
        if self._tracing is not None:
            options = self._tracing.call(self.service_name, func_name, request_id, options, confirmed, True)

        def on_published(error: BaseException | None) -> None:
            if error is None:
                confirmed.set(None)
            else:
                confirmed.set_exception(publish_error(error, func_name))

        try:
            self._publish_request(request_id, func_name, args, kwargs, timeout, on_published, cast=True, **options)
        except BaseException as exc:
            confirmed.set_exception(exc)  # for tracing, which watches it; raised here
            raise
        if self.metrics is not None:
            report_call(self.metrics, self.service_name, func_name, confirmed, time.monotonic())
        return confirmed

    def _check_options(self, options: dict[str, Any]) -> None:
        """Refuse call options that cannot do what they say, before anything is sent."""
        reserved = [name for name in options.get("headers") or () if name.startswith(RESERVED_HEADER_PREFIXES)]
        if reserved:
            raise ValueError(f"headers {', '.join(reserved)} are amphora's own: choose other names")
        if options.get("priority") is not None and self.topology.max_priority is None:
            raise ValueError("priority= needs request queues with priorities: give the client max_priority=")

    def _publish_request(
        self,
        request_id: str,
        func_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        on_published: Callable[[BaseException | None], None],
        routing_key: str | None = None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        cast: bool = False,
        quiet: bool = False,
    ) -> None:
        """Hand a request to the outbox; ``on_published(error)`` runs once the broker took it (None) or
        returned it (MessageReturned), or it cannot be encoded. ``quiet``: see :meth:`Outbox.publish`."""
        if routing_key is None:
            routing_key = self._routing_key(func_name, args, kwargs)
        body, encoding = compress(encode_request(self.serializer, func_name, args, kwargs), self.compress_threshold)
        properties = request_properties(
            request_id=request_id,
            client_id=self.uuid,
            content_type=self.serializer.content_type,
            content_encoding=encoding,
            timeout=timeout,
            cast=cast,
            persistent=self.persistent,
            priority=priority,
            headers=headers,
        )
        if headers or len(routing_key) > 63:  # else all is amphora's own and small (63 characters: <= 252 bytes)
            self.transport.outbox.check(routing_key, properties)

        self.transport.outbox.publish(
            self.topology.request_exchange,
            routing_key,
            body,
            properties,
            mandatory=True,
            on_done=on_published,
            quiet=quiet,
        )

    def _settle(self, request_id: str | None, value: Any = None, error: BaseException | None = None) -> bool:
        pending = self._pending.pop(request_id or "")
        if pending is None:
            return False
        pending.settle(value, error)
        return True

    # --- replies (reader greenlet) -------------------------------------------------------------

    def on_reply(self, message: Message) -> None:
        """A reply from the service's reply exchange, or one of our requests dead-lettered back unanswered
        (from :mod:`amphora.replies`, which acknowledges it after)."""
        properties = message.properties
        headers = properties.headers or {}
        died = death(headers) if message.exchange == self.topology.dead_exchange else None
        if died is not None:
            request_id = properties.message_id or ""
            pending = self._pending.get(request_id)
            if pending is not None and pending.expired(died):
                self._pending.pop(request_id)
        elif message.exchange == self.topology.response_exchange:
            request_id = properties.correlation_id or ""
            pending = self._pending.get(request_id)
            if pending is not None:
                value, error = self._decode(message)
                if pending.add_reply(str(headers.get(HEADER_SERVER, "")), value, error):
                    self._pending.pop(request_id)

    def _decode(self, message: Message) -> tuple[Any, BaseException | None]:
        properties = message.properties
        try:
            body = decompress(message.body, properties.content_encoding, self.max_reply_size)
            return decode_reply(self.serializer, body), None
        except BodyRefused as exc:
            return None, WrongResult(str(exc))
        except RemoteException as exc:
            amphora_error = _AMPHORA_ERRORS.get((properties.headers or {}).get(HEADER_ERROR))  # type: ignore[arg-type]
            return None, exc if amphora_error is None else amphora_error(*exc.args)
        except WrongResult as exc:
            return None, exc

    def has_pending_calls(self) -> bool:
        return bool(self._pending)

    def fail_pending_calls(self, error_text: str) -> None:
        for request_id in list(self._pending):
            self._settle(request_id, error=ReplyQueueLost(error_text))

    def _wait_for_reply_queue(self, connection: Connection) -> None:
        """Publish requests only once the reply queue is bound, or their replies would be unroutable."""
        self._replies.link.ready.wait()
