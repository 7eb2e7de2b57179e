"""The yardstick: a bare AMQP client on pamqp and a gevent socket, just enough for the workloads.

No error handling, no heartbeats (negotiated off), no flow control, one body frame per message, and
pamqp's plain ``frame.marshal``/``frame.unmarshal`` for every frame. A reader greenlet parses frames and
runs the callbacks; a writer greenlet coalesces queued frames into one ``sendall``.
"""

from __future__ import annotations

import socket as _socket
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import gevent
from gevent import socket
from gevent.event import AsyncResult, Event
from pamqp import commands, frame, header
from pamqp.body import ContentBody

Basic = commands.Basic
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_HEAD = struct.Struct(">BHI")
TIMEOUT = 30


class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672))
        self._sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._out_ready = Event()
        self._waiters: dict[int, AsyncResult] = {}
        self._consumers: dict[str, Callable[[Any, bytes], None]] = {}
        self._incoming: dict[int, list[Any]] = {}  # channel -> [deliver, header, body parts, bytes missing]
        self._next_channel = 1
        self.on_confirmed: Callable[[int, bool], None] = lambda count, ok: None
        self.on_reply: Callable[[str, bytes], None] = lambda correlation_id, body: None
        self._confirmed_upto = 0
        # Handshake, synchronously, before the reader and writer greenlets exist.
        self._sock.sendall(PROTOCOL_HEADER)
        self._next_frame()  # Connection.Start
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._sock.sendall(
            frame.marshal(commands.Connection.StartOk(mechanism="PLAIN", response=f"\0{user}\0{password}"), 0)
        )
        tune = self._next_frame()
        self._sock.sendall(frame.marshal(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0), 0))
        vhost = unquote(parts.path[1:]) if parts.path not in ("", "/") else "/"
        self._sock.sendall(frame.marshal(commands.Connection.Open(virtual_host=vhost), 0))
        self._next_frame()  # Connection.OpenOk
        self._greenlets = [gevent.spawn(self._read_loop), gevent.spawn(self._write_loop)]

    # --- frames in and out ---

    def _parse(self) -> list[tuple[int, Any]]:
        """Every complete frame in the buffer, as (channel, pamqp frame)."""
        buffer, offset, found = self._buffer, 0, []
        while len(buffer) - offset >= 8:
            size = FRAME_HEAD.unpack_from(buffer, offset)[2]
            end = offset + size + 8
            if end > len(buffer):
                break
            _, channel, value = frame.unmarshal(bytes(buffer[offset:end]))
            found.append((channel, value))
            offset = end
        del buffer[:offset]
        return found

    def _next_frame(self) -> Any:
        """During the handshake: the next frame (there is only ever one in flight)."""
        while not (found := self._parse()):
            self._buffer += self._sock.recv(65536)
        return found[0][1]

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_ready.set()

    def _write_loop(self) -> None:
        while True:
            self._out_ready.wait()
            self._out_ready.clear()
            while self._out:
                chunks, self._out = self._out, []
                self._sock.sendall(b"".join(chunks))

    def _read_loop(self) -> None:
        while data := self._sock.recv(262144):
            self._buffer += data
            for channel, value in self._parse():
                self._dispatch(channel, value)

    def _dispatch(self, channel: int, value: Any) -> None:
        if isinstance(value, ContentBody):
            incoming = self._incoming[channel]
            incoming[2].append(value.value)
            incoming[3] -= len(value.value)
            if incoming[3] == 0:
                deliver, content_header, parts, _ = self._incoming.pop(channel)
                self._consumers[deliver.consumer_tag](content_header.properties, b"".join(parts))
        elif isinstance(value, header.ContentHeader):
            self._incoming[channel][1] = value
            self._incoming[channel][3] = value.body_size
        elif isinstance(value, Basic.Deliver):
            self._incoming[channel] = [value, None, [], 0]
        elif isinstance(value, (Basic.Ack, Basic.Nack)):
            count = value.delivery_tag - self._confirmed_upto if value.multiple else 1
            self._confirmed_upto = max(self._confirmed_upto, value.delivery_tag)
            self.on_confirmed(count, isinstance(value, Basic.Ack))
        elif channel in self._waiters:
            self._waiters.pop(channel).set(value)

    def _call(self, channel: int, method: Any) -> Any:
        """Send a synchronous method and wait for its answer."""
        waiter = self._waiters[channel] = AsyncResult()
        self._send(frame.marshal(method, channel))
        return waiter.get(timeout=TIMEOUT)

    def _open_channel(self) -> int:
        channel, self._next_channel = self._next_channel, self._next_channel + 1
        self._call(channel, commands.Channel.Open())
        return channel

    def _publish(
        self,
        channel: int,
        queue: str,
        body: bytes,
        properties: Basic.Properties | None = None,
        exchange: str = "",
        mandatory: bool = False,
    ) -> None:
        self._send(
            frame.marshal(Basic.Publish(exchange=exchange, routing_key=queue, mandatory=mandatory), channel)
            + frame.marshal(header.ContentHeader(0, len(body), properties or Basic.Properties()), channel)
            + frame.marshal(ContentBody(body), channel)
        )

    # --- W-confirm ---

    def prepare_confirm(self, queue: str) -> None:
        self._confirm_queue = queue
        self._confirm_channel = self._open_channel()
        self._call(self._confirm_channel, commands.Queue.Declare(queue=queue, durable=True))
        self._call(self._confirm_channel, commands.Confirm.Select())

    def purge(self) -> None:
        self._call(self._confirm_channel, commands.Queue.Purge(queue=self._confirm_queue))

    def publish_confirmed(self, body: bytes) -> None:
        self._publish(self._confirm_channel, self._confirm_queue, body)

    # --- ping-pong ---

    def _consume(self, channel: int, queue: str, callback: Callable[[Any, bytes], None]) -> None:
        tag = f"raw.{len(self._consumers)}"
        self._consumers[tag] = callback
        self._call(channel, Basic.Consume(queue=queue, consumer_tag=tag, no_ack=True))

    def prepare_rpc(self, request_queue: str) -> None:
        channel = self._rpc_channel = self._open_channel()
        self._call(channel, commands.Queue.Declare(queue=request_queue))
        self._request_queue = request_queue
        self._reply_queue = self._call(channel, commands.Queue.Declare(queue="", exclusive=True)).queue
        self._consume(channel, self._reply_queue, lambda props, body: self.on_reply(props.correlation_id, body))

    def request(self, correlation_id: str, body: bytes) -> None:
        properties = Basic.Properties(correlation_id=correlation_id, reply_to=self._reply_queue)
        self._publish(self._rpc_channel, self._request_queue, body, properties)

    def serve_echo(self, request_queue: str) -> None:
        channel = self._open_channel()
        self._call(channel, commands.Queue.Declare(queue=request_queue))

        def echo(props: Basic.Properties, body: bytes) -> None:
            self._publish(channel, str(props.reply_to), body, Basic.Properties(correlation_id=props.correlation_id))

        self._consume(channel, request_queue, echo)

    # --- teardown ---

    def delete_queue(self, queue: str) -> None:
        channel = self._open_channel()
        self._call(channel, commands.Queue.Delete(queue=queue))

    def close(self) -> None:
        self._call(0, commands.Connection.Close(200, "bye", 0, 0))
        gevent.killall(self._greenlets)
        self._sock.close()
