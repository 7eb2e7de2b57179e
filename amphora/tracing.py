"""OpenTelemetry tracing of calls and requests (the ``otel`` extra), on when a client or server is given
``tracing=True`` (the global tracer provider) or ``tracing=<a TracerProvider>``.

A call gets a CLIENT span (a cast: PRODUCER) named ``"{service}/{function}"``, from the call until its
result settles (a cast: until the broker confirmed it); its trace context travels in the request's headers
(W3C ``traceparent``/``tracestate`` with OpenTelemetry's default propagator). The server runs the handler
within a SERVER span (a cast: CONSUMER), the child of the caller's span and current while the handler runs,
so the calls the handler makes are its children. Off, nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from .exceptions import IgnoreRequest, RemoteException
from .functions import Function, RequestContext, TimeLimitExceeded, invoke

if TYPE_CHECKING:
    from gevent.event import AsyncResult
    from opentelemetry.trace import Span, TracerProvider

TracingOption: TypeAlias = "bool | TracerProvider"
"""A client's or server's ``tracing=``: off (False), the global tracer provider (True), or this provider."""

RPC_SYSTEM = "amphora"
"""The spans' ``rpc.system``: amphora's own protocol (the transport is ``messaging.system``, RabbitMQ)."""


def tracing_for(option: TracingOption) -> Tracing | None:
    """The tracing of a client or server given ``tracing=option``; None when off."""
    if option is False:
        return None
    return Tracing(None if option is True else option)


def error_type(error: BaseException) -> str:
    """A span's ``error.type``: the remote exception's class name for a RemoteException, else the class name."""
    return error.error_type if isinstance(error, RemoteException) else type(error).__name__


class Tracing:
    """Starts and ends the spans of one client or server (see the module's documentation)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError:
            raise ImportError("tracing= needs OpenTelemetry: pip install 'amphora-rpc[otel]'") from None
        from . import __version__

        self._tracer = trace.get_tracer("amphora", __version__, tracer_provider=provider)
        self._trace = trace
        self._context = context
        self._propagate = propagate

    def call(
        self, service: str, function: str, request_id: str, options: dict[str, Any], result: AsyncResult, cast: bool
    ) -> dict[str, Any]:
        """Start the span of a call (a child of the current one), ended when ``result`` settles; return the
        call's ``options`` with its context added to (a copy of) their ``headers``."""
        kind = self._trace.SpanKind.PRODUCER if cast else self._trace.SpanKind.CLIENT
        span = self._tracer.start_span(
            f"{service}/{function}", kind=kind, attributes=_attributes(service, function, request_id)
        )
        headers = dict(options.get("headers") or {})
        self._propagate.inject(headers, context=self._trace.set_span_in_context(span))
        result.rawlink(lambda settled: self._end(span, settled.exception))
        return {**options, "headers": headers}

    def handle(
        self, service: str, function: str, request_id: str, headers: dict[str, Any], cast: bool
    ) -> Callable[..., Any]:
        """:func:`~amphora.functions.invoke`, running the handler in the span of a request, a child of the
        caller's span (from ``headers``) and current meanwhile."""
        return functools.partial(self._invoke, service, function, request_id, headers, cast)

    def _invoke(
        self,
        service: str,
        name: str,
        request_id: str,
        headers: dict[str, Any],
        cast: bool,
        function: Function,
        args: list[Any],
        kwargs: dict[str, Any],
        context: RequestContext | None,
        threads: bool,
        time_limit: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Any:
        # the propagators take strings only: a foreign caller's other values must not fail the request
        parent = self._propagate.extract({name: value for name, value in headers.items() if isinstance(value, str)})
        kind = self._trace.SpanKind.CONSUMER if cast else self._trace.SpanKind.SERVER
        span = self._tracer.start_span(
            f"{service}/{name}", parent, kind=kind, attributes=_attributes(service, name, request_id)
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        try:
            if threads:  # a thread of gevent's pool starts with an empty context: give it this one
                function = dataclasses.replace(
                    function, func=functools.partial(contextvars.copy_context().run, function.func)
                )
            result = invoke(function, args, kwargs, context, threads, time_limit, loop)
        except TimeLimitExceeded as exc:
            self._end(span, exc, "HandlerTimeout")  # as the caller sees it
            raise
        except IgnoreRequest:  # not a failure: the request goes to another server (fanout: to none)
            self._end(span, None)
            raise
        except BaseException as exc:
            self._end(span, exc)
            raise
        finally:
            self._context.detach(token)
        self._end(span, None)
        return result

    def _end(self, span: Span, error: BaseException | None, type_name: str | None = None) -> None:
        """End ``span``, marked as failed with ``error`` (of ``type_name``, by default its own) if any."""
        if error is not None:
            span.set_attribute("error.type", type_name or error_type(error))
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end()


def _attributes(service: str, function: str, request_id: str) -> dict[str, str]:
    return {
        "rpc.system": RPC_SYSTEM,
        "rpc.service": service,
        "rpc.method": function,
        "messaging.system": "rabbitmq",
        "messaging.message.id": request_id,
    }
