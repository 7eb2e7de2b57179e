"""Fuzzing the AMQP layer's input side: random and mutated byte streams, into the frame reader and into a
live connection through a fake broker socket. Only typed errors may come out; nothing may hang."""

from __future__ import annotations

import gevent
import pytest
from gevent import socket
from gevent.event import AsyncResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands

from amphora.amqp import Connection, ConnectionParameters, Properties, frames
from amphora.amqp.errors import AMQPError, NotFound, ProtocolError

pytestmark = pytest.mark.timeout(120)

FRAME_MAX = 4096


def valid_stream() -> bytes:
    """A realistic incoming stream: a delivery of a three-frame body, a returned message, an ack, a nack, a
    heartbeat, a close."""
    method = frames.method_frame(1, commands.Basic.Deliver("ctag", 7, False, "ex", "rk"))
    returned = frames.method_frame(1, commands.Basic.Return(312, "NO_ROUTE", "ex", "nowhere"))
    properties = Properties(message_id="m", headers={"k": 1})
    return b"".join(
        (
            *frames.content_frames(1, method, b"x" * 9000, properties, FRAME_MAX),
            *frames.content_frames(1, returned, b"back", Properties(correlation_id="c"), FRAME_MAX),
            frames.method_frame(1, commands.Basic.Ack(3, True)),
            frames.method_frame(1, commands.Basic.Nack(4, False, False)),
            frames.HEARTBEAT,
            frames.method_frame(1, commands.Channel.Close(404, "gone", 50, 10)),
        )
    )


VALID = valid_stream()


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "length"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:  # a frame length field rewritten: the classic way to ask for a huge allocation
            data[position : position + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return bytes(data)


def feed_in_chunks(data: bytes, cuts: list[int]) -> list[frames.DecodedFrame]:
    reader = frames.FrameReader(FRAME_MAX)
    decoded: list[frames.DecodedFrame] = []
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        decoded += reader.feed(data[previous:cut])
        previous = cut
    assert len(reader._buffer) < FRAME_MAX  # never holds more than one incomplete frame
    return decoded


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=5))
def test_random_bytes_give_frames_or_a_protocol_error(data, cuts):
    try:
        feed_in_chunks(data, cuts)
    except ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(mutated_streams(), st.lists(st.integers(0, len(VALID)), max_size=5))
def test_mutated_streams_give_frames_or_a_protocol_error(data, cuts):
    try:
        decoded = feed_in_chunks(data, cuts)
    except ProtocolError:
        return
    for _, frame_type, payload in decoded:
        assert frame_type in (frames.FRAME_METHOD, frames.FRAME_HEADER, frames.FRAME_BODY, frames.FRAME_HEARTBEAT)
        if frame_type == frames.FRAME_BODY:
            assert len(payload) <= FRAME_MAX - frames.FRAME_OVERHEAD


class FakeBroker:
    """A listener that completes the AMQP handshake, opens channel 1, then sends whatever it is given."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.payload: AsyncResult = AsyncResult()

    def serve_once(self) -> None:
        peer, _ = self.listener.accept()
        reader = frames.FrameReader(FRAME_MAX)
        received: list[frames.DecodedFrame] = []

        def expect(method_class: type) -> None:
            while not any(isinstance(p, method_class) for _, _, p in received):
                data = peer.recv(65536)
                if not data:
                    raise ConnectionError("client went away")
                received.extend(reader.feed(data[8:] if data.startswith(b"AMQP") else data))

        try:
            peer.recv(8)  # protocol header
            peer.sendall(frames.method_frame(0, commands.Connection.Start(server_properties={}, mechanisms="PLAIN")))
            expect(commands.Connection.StartOk)
            peer.sendall(frames.method_frame(0, commands.Connection.Tune(2047, FRAME_MAX, 0)))
            expect(commands.Connection.Open)
            peer.sendall(frames.method_frame(0, commands.Connection.OpenOk()))
            expect(commands.Channel.Open)
            peer.sendall(frames.method_frame(1, commands.Channel.OpenOk()))
            peer.sendall(self.payload.get())
            peer.shutdown(socket.SHUT_WR)  # then end of stream: the client must end too, never hang
            while peer.recv(65536):
                pass
        except OSError:
            pass
        finally:
            peer.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_streams(), st.binary(min_size=1, max_size=2000)))
def test_a_live_connection_fed_garbage_ends_with_a_typed_error(payload):
    broker = FakeBroker()
    server = gevent.spawn(broker.serve_once)
    connection = Connection(
        ConnectionParameters(port=broker.port, frame_max=FRAME_MAX, heartbeat=0, connection_timeout=5)
    ).open()
    ended: AsyncResult = AsyncResult()
    connection.add_close_callback(ended.set)
    connection.channel()
    broker.payload.set(payload)
    error = ended.get(timeout=5)
    assert isinstance(error, AMQPError), repr(error)
    assert not connection.is_open
    server.kill()
    broker.listener.close()


def test_fake_broker_handshake_works_for_a_clean_stream():
    broker = FakeBroker()
    server = gevent.spawn(broker.serve_once)
    connection = Connection(ConnectionParameters(port=broker.port, frame_max=FRAME_MAX, heartbeat=0)).open()
    channel = connection.channel()
    channel_closed: AsyncResult = AsyncResult()
    channel.add_close_callback(channel_closed.set)
    broker.payload.set(frames.method_frame(1, commands.Channel.Close(404, "NOT_FOUND - no queue", 50, 10)))
    assert isinstance(channel_closed.get(timeout=5), NotFound)
    connection.close(timeout=1)
    server.kill()
    broker.listener.close()
