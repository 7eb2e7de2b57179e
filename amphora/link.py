"""Link: a channel that stays up, on a connection shared with the other links of the process.

A link's channel is its connection's main channel, shared with the other links on that connection
(:mod:`amphora.connections`); the link still has its own declarations, consumers, hooks, ready event,
generation and operation channels. What the broker may refuse (declarations, the check that a queue to consume
exists) goes on a channel of the link's own first, so that a refusal closes only that channel and stays that
link's error; a link whose consumer the broker refuses on the shared channel all the same goes on alone
(:meth:`Link.isolate`). A link that leaves a shared channel (stop, reset) cancels its consumers and hands
back what they received and nobody acknowledged.

It connects to one of several broker URLs (taking a connection from :mod:`amphora.connections`), declares the
registered topology and starts the registered consumers, and when its channel or the connection dies it
sets up again (backoff with jitter). Errors that retrying cannot fix (wrong password, unknown vhost, TLS, a
declaration the broker refuses) are kept in ``setup_error`` so that whoever waits for the link can raise them.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from .amqp import Channel, Connection, ConnectionParameters, Message
from .amqp.errors import (
    AMQPError,
    AuthenticationError,
    ChannelClosed,
    ChannelLimitReached,
    ConnectionClosed,
    ConnectionLost,
    InvalidURL,
    NotFound,
    TLSError,
    VhostNotAllowed,
)
from .amqp.errors import ConnectionError as AMQPConnectionError
from .connections import Role, SharedConnections, shared_connections
from .topology import Declaration

log = logging.getLogger(__name__)

PERMANENT_ERRORS = (AuthenticationError, VhostNotAllowed, TLSError, InvalidURL, ChannelClosed)
"""Errors that reconnecting will not fix: a link reports them to whoever waits for it."""
PERMANENT_CLOSE_CODES = frozenset({403, 501, 502, 503, 504, 505, 530, 540})
"""Connection.Close reply codes that reconnecting will not fix either (access refused, a protocol error,
not allowed, not implemented); the others (320 broker shutdown, 506 resource error, 541 internal error)
are retried."""
MAX_BACKOFF = 2.0
FAILURE_REPORT_INTERVAL = 30.0
"""Seconds between two ERROR reports of a link that keeps failing to reach any broker (the first one is at once)."""
OPERATION_CHANNELS = 64
"""Channels a link keeps at most for :meth:`Link.execute`: more concurrent operations wait their turn."""
CHANNEL_WAIT = 0.1
"""Seconds at most that an operation which found no free channel number waits before it tries again."""
CLOSE_TIMEOUT = 2.0
"""Seconds a stopping link waits for the broker to confirm its channels closed."""

ConnectedHook = Callable[[Connection], None]
ReadyHook = Callable[[Channel], None]
T = TypeVar("T")


@dataclass
class _Consumer:
    queue: str
    on_message: Callable[[Message], None]
    on_cancel: Callable[[str], None] | None
    no_ack: bool
    prefetch: int
    optional: bool
    tag: str | None = None


class Link:
    """One auto-reconnecting channel, its topology and its consumers, on a connection it shares with the
    other links of the process that go to the same broker in the same role (:mod:`amphora.connections`).

    A link with ``confirm`` publishes (with publisher confirms); one without consumes. Either is on the main
    channel of its connection, shared with the other links there, unless :meth:`isolate` asks for one of its
    own.
    """

    def __init__(
        self,
        parameters: Sequence[ConnectionParameters],
        name: str,
        prefetch: int = 0,
        confirm: bool = False,
        connections: SharedConnections | None = None,
    ) -> None:
        if not parameters:
            raise ValueError("a link needs at least one broker URL")
        self.name = name
        self._parameters = list(parameters)
        self._prefetch = prefetch
        self._confirm = confirm
        self._role = Role.PUBLISH if confirm else Role.CONSUME
        self.alone = False
        """Whether the link has a channel of its own instead of the shared main channel (see :meth:`isolate`)."""
        self._on_main = False  # whether ``channel`` is the connection's shared main channel
        self._connections = connections or shared_connections()
        self._declarations: list[Declaration] = []
        self._consumers: dict[int, _Consumer] = {}
        self._consumer_ids = 0
        self._on_connected: list[ConnectedHook] = []
        self._on_ready: list[ReadyHook] = []
        self.connection: Connection | None = None
        self.channel: Channel | None = None
        self._tag_prefix = f"amphora.link{next(_link_numbers)}."  # its consumers' tags
        self._tags = itertools.count(1)
        self.generation = 0
        self.ready = Event()
        self.setup_error: BaseException | None = None
        self.failures = 0
        """Failed connection attempts since the last success (or the start)."""
        self.last_error: str | None = None
        """The last failed attempt's error, naming its broker (None once connected)."""
        self._opening: str | None = None  # the broker URL of a connection being opened
        self._attempt_started = self._failing_since = self._reported_at = 0.0
        self._attempted = Event()
        self._lost = Event()
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None
        self._operation_turns = Semaphore(OPERATION_CHANNELS)
        self._operation_channels: list[Channel] = []  # open, idle, for execute
        self._channel_returned = Event()

    # --- registration --------------------------------------------------------------------------

    def on_connected(self, hook: ConnectedHook) -> None:
        """Run ``hook(connection)`` on every new connection, before the topology is declared."""
        self._on_connected.append(hook)

    def on_ready(self, hook: ReadyHook) -> None:
        """Run ``hook(channel)`` once topology and consumers are in place, before the link counts as ready."""
        self._on_ready.append(hook)

    def declare(self, declarations: Sequence[Declaration]) -> None:
        """Declare now if connected, and again after every reconnect. If the broker refuses them now
        (ChannelClosed: no permission, other arguments...), they are forgotten and the error raised."""
        new = [d for d in declarations if d not in self._declarations]
        self._declarations.extend(new)
        channel = self._live_channel()
        if channel is not None:
            try:
                self.set_up(channel, lambda setup: [declaration.declare(setup) for declaration in new])
            except ChannelClosed:
                self.forget(new)
                raise

    def forget(self, declarations: Sequence[Declaration]) -> None:
        """Stop re-declaring these after reconnects."""
        self._declarations = [d for d in self._declarations if d not in declarations]

    def add_consumer(
        self,
        queue: str,
        on_message: Callable[[Message], None],
        on_cancel: Callable[[str], None] | None = None,
        no_ack: bool = False,
        prefetch: int = 0,
        optional: bool = False,
    ) -> int:
        """Consume ``queue`` now if connected and after every reconnect; returns an id for removal.

        ``prefetch`` limits this consumer's unacknowledged deliveries (by default, the link's ``prefetch``).
        An ``optional`` consumer's queue may vanish: if it is gone at a reconnect, the consumer is dropped
        and ``on_cancel`` called, as when the broker cancels it, instead of failing the link.
        """
        self._consumer_ids += 1
        consumer_id = self._consumer_ids
        consumer = _Consumer(queue, on_message, on_cancel, no_ack, prefetch, optional)
        self._consumers[consumer_id] = consumer
        channel = self._live_channel()
        if channel is not None:
            try:
                self._start_consumer(channel, consumer)
            except ChannelClosed:  # refused now (no permission, no queue): it is not kept either
                del self._consumers[consumer_id]
                raise
        return consumer_id

    def remove_consumer(self, consumer_id: int) -> None:
        """Cancel a consumer (deliveries already sent still reach its callback)."""
        consumer = self._consumers.pop(consumer_id, None)
        channel = self._live_channel()
        if consumer is not None and consumer.tag is not None and channel is not None:
            try:
                channel.basic_cancel(consumer.tag)
            except AMQPError as exc:
                log.debug("%s: cancel of %s failed: %s", self.name, consumer.queue, exc)

    @property
    def connection_timeout(self) -> float:
        """The longest connection timeout among the link's URLs."""
        return max(p.connection_timeout for p in self._parameters)

    @property
    def frame_max(self) -> int:
        """The largest frame the broker takes: negotiated on the current connection; when not connected, the
        smallest configured (the broker may lower it when connecting); 0 if unknown."""
        connection = self.connection
        if connection is not None and connection.is_open:
            return connection.frame_max
        return 0 if any(not p.frame_max for p in self._parameters) else min(p.frame_max for p in self._parameters)

    def _live_channel(self) -> Channel | None:
        channel = self.channel
        return channel if self.ready.is_set() and channel is not None and channel.is_open else None

    def set_up(self, channel: Channel, work: Callable[[Channel], object]) -> None:
        """Run ``work`` (declarations) on the link's channel, or when that is the shared main channel on a
        channel of its own, closed after: if the broker refuses, it closes only that one."""
        if not self._on_main:
            work(channel)
            return
        setup = channel.connection.channel()
        try:
            work(setup)
        finally:
            _close_quietly(setup)

    def _start_consumer(self, channel: Channel, consumer: _Consumer) -> None:
        """Consume with the consumer's prefetch; a consumer the broker refuses on the shared main channel sends
        the link on alone (callers that can check the queue first: the broker would close the channel)."""
        # basic.qos without global applies to the consumers started after it on the channel (global qos
        # is slower for the broker, and quorum queues refuse it): each qos and its consume go together
        prefetch = consumer.prefetch or self._prefetch
        qos = _channel_qos.setdefault(channel, _Qos())
        try:
            with qos.turn:
                if prefetch != qos.prefetch:
                    channel.basic_qos(prefetch_count=prefetch)
                    qos.prefetch = prefetch
                consumer.tag = channel.basic_consume(
                    consumer.queue,
                    consumer.on_message,
                    no_ack=consumer.no_ack,
                    consumer_tag=f"{self._tag_prefix}{next(self._tags)}",
                    on_cancel=consumer.on_cancel,
                )
        except ChannelClosed:
            if self._on_main:  # its retries must not close the channel under the others again
                self.isolate(True)
            raise

    def _queue_there(self, channel: Channel, consumer: _Consumer) -> bool:
        """At setup, whether a consumer's queue is there: an optional one's may be gone (False). On the shared
        main channel, a missing one's (NotFound) is found on a channel of the link's own, which the broker
        closes instead: a queue gone while the link was away does not close the channel under the others at
        each retry."""
        if consumer.optional:
            return queue_exists(channel.connection, consumer.queue)
        if self._on_main:
            self.set_up(channel, lambda setup: setup.queue_declare(consumer.queue, passive=True))
        return True

    def _end_consumers(self, channel: Channel) -> None:
        """Leaving a channel that stays open: cancel the link's consumers, and hand back what they (and those
        removed before) received and nobody acknowledged, as closing the channel would."""
        try:
            for consumer in list(self._consumers.values()):
                if consumer.tag is not None:
                    channel.basic_cancel(consumer.tag)
            channel.requeue_unacked(self._tag_prefix)
        except AMQPError as exc:  # the channel ended meanwhile: the broker requeues them anyway
            log.debug("%s: its consumers did not end cleanly: %s", self.name, exc)

    def execute(self, operation: Callable[[Channel], T], timeout: float | None = None) -> T:
        """Run ``operation(channel)`` once connected, and again if the connection is lost meanwhile.

        Each operation has a channel to itself (a channel error it causes closes only that channel), one of at
        most :data:`OPERATION_CHANNELS`, kept open for the next operations: beyond those, operations wait their
        turn. Raises the operation's channel errors, and TimeoutError if no connection and no channel come
        within ``timeout``.
        """
        if self._greenlet is None:
            raise RuntimeError(f"{self.name} is not started: call serve() first")
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        retries = 0
        while True:
            if not self.wait_ready(remaining()) or not self._operation_turns.acquire(timeout=remaining()):
                raise TimeoutError(f"{self.name}: no broker connection or channel within {timeout} s")
            try:
                return self._operate(operation)
            except (AMQPConnectionError, ChannelLimitReached) as exc:
                log.debug("%s: an operation found no connection or channel, retrying: %s", self.name, exc)
                left = remaining()
                if left == 0.0:
                    raise TimeoutError(f"{self.name}: no broker connection or channel within {timeout} s") from exc
                limited = isinstance(exc, ChannelLimitReached)
            finally:
                self._operation_turns.release()
            retries += 1
            pause = min(MAX_BACKOFF, 0.01 * 2 ** min(retries, 8), MAX_BACKOFF if left is None else left)
            if limited:  # the broker allows fewer channels: wait for one to come back (or for others to close)
                self._channel_returned.clear()
                self._channel_returned.wait(min(pause, CHANNEL_WAIT))
            else:
                gevent.sleep(pause)

    def _operate(self, operation: Callable[[Channel], T]) -> T:
        connection = self.connection
        if connection is None:
            raise ConnectionLost(f"{self.name} is not connected")
        while self._operation_channels:
            channel = self._operation_channels.pop()
            if channel.connection is connection and channel.is_open:
                break
            if channel.is_open:  # of a connection this link no longer uses, which others may share
                gevent.spawn(_close_quietly, channel)
        else:
            channel = connection.channel()
        try:
            result = operation(channel)
        except AMQPError:
            self._keep_operation_channel(channel)
            raise
        except BaseException:  # killed, or a bug: the channel may be waiting for an answer
            gevent.spawn(_close_quietly, channel)
            raise
        self._keep_operation_channel(channel)
        return result

    def _keep_operation_channel(self, channel: Channel) -> None:
        if channel.is_open:
            self._operation_channels.append(channel)
            self._channel_returned.set()

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (a no-op if running)."""
        if self._greenlet is None or self._greenlet.dead:
            self._stopping = False
            self.failures, self.last_error = 0, None
            self._greenlet = gevent.spawn(self._run)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected and set up; raise a setup error that retrying cannot fix."""
        return self._wait(lambda: False, timeout)

    def wait_tried(self, timeout: float | None = None) -> bool:
        """Like :meth:`wait_ready`, but also return (False) once every broker URL failed once."""
        return self._wait(lambda: self.failures >= len(self._parameters), timeout)

    def _wait(self, enough: Callable[[], bool], timeout: float | None) -> bool:
        if not self.ready.is_set() and self.setup_error is None and not enough():
            with gevent.Timeout(timeout, False):
                while not self.ready.is_set() and self.setup_error is None and not enough():
                    self._attempted.clear()
                    self._attempted.wait()
        if self.setup_error is not None and not self.ready.is_set():
            raise self.setup_error
        return self.ready.is_set()

    def unreachable(self) -> str | None:
        """Why the link has no connection, while it cannot get one: the last failed attempt's error (naming
        its broker) and the attempts so far, or the broker that has not answered the attempt under way.
        None while connected, setting up a connection, stopped, or waiting to retry after a lost one."""
        if self.ready.is_set() or self._stopping:
            return None
        now = time.monotonic()
        if self.last_error is not None:
            attempts = f"{self.failures} failed attempt{'s' if self.failures > 1 else ''}"
            return f"{self.last_error} ({attempts} in {now - self._failing_since:.1f} s)"
        if self._opening is not None:
            return f"no answer yet from {self._opening} ({now - self._attempt_started:.1f} s)"
        return None

    def reset(self) -> None:
        """Set the link up again (e.g. after the broker cancelled a consumer, or nacked a publish): declare,
        start the consumers, a new generation, the ``on_ready`` hooks. A channel of the link's own is closed
        first (its unacknowledged deliveries go back to their queues); the shared main channel stays open for
        the other links on it: the link leaves it and takes it again."""
        self.ready.clear()
        self._lost.set()  # the link's greenlet gives the channel and the connection back and sets up again

    def isolate(self, alone: bool) -> None:
        """Use a channel of the link's own (``alone``), or again the shared main channel: a link that found
        the broker refusing one of its publishes probes alone (its outbox says when it is done), and one whose
        consumer the broker refused on the shared channel stays alone, so that the refusals it causes close no
        channel of other links. A link on the other kind of channel sets up again (:meth:`reset`)."""
        if alone == self.alone:
            return
        self.alone = alone
        if self.channel is not None and self._on_main == alone:
            self.reset()

    def stop(self) -> None:
        """Close the link's channels, give its connection back, and stop reconnecting."""
        self._stopping = True
        self.ready.clear()
        self._lost.set()
        if self._greenlet is not None:
            self._greenlet.kill(timeout=5)  # it gives its connection back on its way out
        self._release_connection()

    def _release_connection(self) -> None:
        """Close the link's channels (unacknowledged deliveries go back to their queues) and give the connection
        back; whoever comes second finds nothing to do."""
        connection, main, channels = self.connection, self.channel, [self.channel, *self._operation_channels]
        if self._on_main:  # the others on it keep it open
            channels[0] = None
        self.connection, self.channel, self._operation_channels = None, None, []
        if connection is None:
            return
        try:
            if self._on_main:
                self._on_main = False
                with gevent.Timeout(CLOSE_TIMEOUT, False):
                    if main is not None:
                        self._end_consumers(main)
                    self._connections.release_channel(connection, self)
            if connection.is_open:
                with gevent.Timeout(CLOSE_TIMEOUT, False):
                    for channel in channels:
                        if channel is not None and channel.is_open:
                            _close_quietly(channel)
        finally:
            self._connections.release(connection)

    def _run(self) -> None:
        first = 0  # the URL tried first: after a lost connection, the one after the broker that was lost
        while not self._stopping:
            index = (first + self.failures) % len(self._parameters)
            parameters = self._parameters[index]
            try:
                self._connect(parameters)
                if self.failures >= len(self._parameters):  # reported as unreachable: say it is over
                    seconds = time.monotonic() - self._failing_since
                    log.warning("%s: connected after %d failed attempts in %.1f s", self.name, self.failures, seconds)
                self.failures, self.last_error = 0, None
                self.setup_error = None
                self._attempted.set()
                self._lost.wait()
                first = (index + 1) % len(self._parameters)
            except ChannelLimitReached as exc:  # the shared connection has no channel left: the next lease
                log.debug("%s: %s; leasing another connection", self.name, exc)  # gives another one
                if self.connection is not None:
                    self._connections.full(self.connection)
            except AMQPError as exc:
                self.failures += 1
                self._report_failure(parameters, exc)
            finally:
                self.ready.clear()
                self._release_connection()
            if not self._stopping:
                gevent.sleep(min(MAX_BACKOFF, 0.05 * 2**self.failures) * random.uniform(0.5, 1.0))

    def _connect(self, parameters: ConnectionParameters) -> None:
        self._lost.clear()
        self._opening, self._attempt_started = parameters.url, time.monotonic()
        try:
            connection = self.connection = self._connections.lease(parameters, self._role)
            channel = self._open_channel(connection)
        finally:
            self._opening = None
        for hook in self._on_connected:
            hook(connection)
        if self._declarations:
            self.set_up(channel, self._declare_registered)
        started: set[int] = set()
        while pending := [(i, c) for i, c in list(self._consumers.items()) if i not in started]:
            for consumer_id, consumer in pending:
                started.add(consumer_id)
                if not self._queue_there(channel, consumer):
                    self._drop_vanished(consumer_id, consumer)
                elif consumer_id in self._consumers:
                    self._start_consumer(channel, consumer)
        self.generation += 1
        for ready_hook in self._on_ready:
            ready_hook(channel)
        self.ready.set()
        log.info("%s: connected to %s", self.name, parameters.url)

    def _open_channel(self, connection: Connection) -> Channel:
        """The link's channel on ``connection``: the shared main channel, or one of its own (with confirms on
        if the link publishes). A lost connection closes its channels too: it reaches the link that way."""
        if not self.alone:
            self.channel = self._connections.lease_channel(connection, self, self._on_lost)
            self._on_main = True
            return self.channel
        channel = self.channel = connection.channel()
        channel.add_close_callback(self._on_lost)
        if self._confirm:
            channel.confirm_select()
        return channel

    def _declare_registered(self, channel: Channel) -> None:
        """Declare the registered topology; declarations registered meanwhile (each step yields) too."""
        declared = 0
        while declared < len(self._declarations):
            self._declarations[declared].declare(channel)
            declared += 1

    def _drop_vanished(self, consumer_id: int, consumer: _Consumer) -> None:
        log.info("%s: queue %s is gone: its consumer ends", self.name, consumer.queue)
        self._consumers.pop(consumer_id, None)
        if consumer.on_cancel is not None:
            consumer.on_cancel("")

    def _on_lost(self, error: BaseException | None) -> None:
        if error is not None or not self._stopping:
            self.ready.clear()
            self._lost.set()

    def _report_failure(self, parameters: ConnectionParameters, error: AMQPError) -> None:
        """Log a failed attempt: an error retrying cannot fix at once; a broker that cannot be reached as a
        warning while other URLs remain to try, then as an error once every URL failed, and from then on
        at most once every FAILURE_REPORT_INTERVAL seconds."""
        now = time.monotonic()
        if self.failures == 1:
            self._failing_since = self._attempt_started
        text = str(error)
        self.last_error = text if parameters.url in text else f"{parameters.url}: {text}"
        if isinstance(error, PERMANENT_ERRORS) or (
            isinstance(error, ConnectionClosed) and error.code in PERMANENT_CLOSE_CODES
        ):
            self.setup_error = error
            log.error("%s: %s", self.name, error)
        elif self.failures < len(self._parameters):
            log.warning("%s: cannot connect: %s; trying the next broker", self.name, self.last_error)
        elif self.failures == len(self._parameters):
            self._reported_at = now
            log.error(
                "%s: cannot connect: %s; retrying (reported again every %.0f s at most)",
                self.name,
                self.last_error,
                FAILURE_REPORT_INTERVAL,
            )
        elif now - self._reported_at >= FAILURE_REPORT_INTERVAL:
            self._reported_at = now
            log.error(
                "%s: still cannot connect after %d attempts in %.0f s: %s; retrying",
                self.name,
                self.failures,
                now - self._failing_since,
                self.last_error,
            )
        self._attempted.set()


@dataclass
class _Qos:
    """The prefetch a channel's consumers start with (the last basic.qos), and the turn of whoever starts one."""

    prefetch: int = 0
    turn: Semaphore = field(default_factory=Semaphore)


_channel_qos: weakref.WeakKeyDictionary[Channel, _Qos] = weakref.WeakKeyDictionary()
_link_numbers = itertools.count(1)


def queue_exists(connection: Connection, queue: str) -> bool:
    """Whether ``queue`` exists, asked on a throwaway channel (the broker closes it if not)."""
    channel = connection.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except NotFound:
        return False
    _close_quietly(channel)
    return True


def settle_quietly(settle: Callable[..., None], *args: object) -> None:
    """Ack, nack or reject a delivery; if its channel is gone, the broker redelivers it anyway."""
    try:
        settle(*args)
    except AMQPError as exc:
        log.debug("could not settle a delivery (it will be redelivered): %s", exc)


def _close_quietly(channel: Channel) -> None:
    try:
        channel.close()
    except AMQPError as exc:
        log.debug("closing a channel failed: %s", exc)


def start_links(links: Sequence[Link], purpose: str) -> None:
    """Start links and wait, at most one connection timeout in all, until each is up or has tried every
    broker URL once.

    Errors that retrying cannot fix stop the links and are raised; an unreachable broker is only logged
    (the links keep trying and work waits for them).
    """
    for link in links:
        link.start()
    deadline = time.monotonic() + max(link.connection_timeout for link in links)
    try:
        for link in links:
            if not link.wait_tried(timeout=max(0.0, deadline - time.monotonic())):
                log.warning("%s: no broker answers yet; %s starts when one does", link.name, purpose)
    except BaseException:
        for link in links:
            link.stop()
        raise
