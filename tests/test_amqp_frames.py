"""The frame codec (pure logic, no broker)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame, header
from pamqp.body import ContentBody

from amphora.amqp import Properties, frames
from amphora.amqp.errors import ProtocolError


def _message_frames(body: bytes, frame_max: int = 4096) -> bytes:
    method = frames.method_frame(1, commands.Basic.Deliver("ctag", 7, False, "ex", "rk"))
    return b"".join(frames.content_frames(1, method, body, Properties(message_id="m1"), frame_max))


def _feed_through_one_buffer(reader: frames.FrameReader, data: bytes, cuts: list[int]) -> list[frames.DecodedFrame]:
    """Feed ``data`` cut at ``cuts`` as the connection does: each piece a view of one buffer that the next read
    overwrites (here with garbage, right after each feed)."""
    buffer = bytearray(len(data))
    decoded: list[frames.DecodedFrame] = []
    for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
        size = stop - start
        buffer[:size] = data[start:stop]
        decoded += reader.feed(memoryview(buffer)[:size])
        buffer[:] = b"\xee" * len(buffer)
    return decoded


def test_frames_split_anywhere_are_reassembled():
    body = bytes(range(256)) * 40  # 10,240 bytes: three body frames at frame_max 4096
    data = _message_frames(body) + frames.HEARTBEAT
    for cut in (1, 7, 8, 100, 4097, len(data) - 1):
        decoded = _feed_through_one_buffer(frames.FrameReader(4096), data, [cut])
        kinds = [frame_type for _, frame_type, _ in decoded]
        assert kinds == [frames.FRAME_METHOD, frames.FRAME_HEADER] + [frames.FRAME_BODY] * 3 + [frames.FRAME_HEARTBEAT]
        assert b"".join(p for _, t, p in decoded if t == frames.FRAME_BODY) == body
        assert decoded[1][2].properties.message_id == "m1"
        assert decoded[0][2].delivery_tag == 7


def test_every_body_frame_fits_frame_max():
    reader = frames.FrameReader(4096)
    decoded = reader.feed(_message_frames(b"x" * 20000, frame_max=4096))
    assert all(len(p) <= 4096 - frames.FRAME_OVERHEAD for _, t, p in decoded if t == frames.FRAME_BODY)


def test_a_content_header_over_frame_max_is_refused_and_one_that_fits_is_not():
    method = frames.method_frame(1, commands.Basic.Publish(exchange="ex", routing_key="rk"))

    def header_of(size: int) -> Properties:  # properties that encode to exactly ``size`` bytes
        return Properties(headers={"h": "x" * (size - 2 - 4 - 1 - 1 - 1 - 4)})

    fitting = header_of(4096 - frames.HEADER_FRAME_OVERHEAD)
    assert len(b"".join(frames.content_frames(1, method, b"body", fitting, 4096))) > 4096
    with pytest.raises(ValueError, match="frame_max 4096"):
        frames.content_frames(1, method, b"body", header_of(4096 - frames.HEADER_FRAME_OVERHEAD + 1), 4096)
    with pytest.raises(ValueError, match="routing key"):
        frames.check_publishable("k" * 256, Properties(), 4096)
    frames.check_publishable("é" * 127, fitting, 4096)


def test_oversized_length_is_refused_before_allocating():
    reader = frames.FrameReader(4096)
    with pytest.raises(ProtocolError, match="exceeds frame_max"):
        reader.feed(b"\x03\x00\x01\xff\xff\xff\xf0")  # claims a 4 GB frame
        reader.feed(b"\x00")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x0b\x00", "end byte"),
        (b"\x01\x00\x00\x00\x00\x00\x04\xde\xad\xbe\xef\xce", "unknown method"),
        (b"\x09\x00\x00\x00\x00\x00\x00\xce", "unknown frame type"),
        (b"\x01\x00\x00\x00\x00\x00\x02\x00\x0a\xce\x00\x33", "too short"),  # index read past the end
        (b"\x01\x00\x00\x00\x00\x00\x05\x00\x3c\x00\x28\x01\xce", "malformed"),
        (b"AMQP\x00\x00\x09\x01", "does not accept"),
    ],
)
def test_garbage_is_a_protocol_error(data, message):
    with pytest.raises(ProtocolError, match=message):
        frames.FrameReader(4096).feed(data)


short_strings = st.text(max_size=30).filter(lambda text: len(text.encode()) <= 255)
exchange_names = st.from_regex(r"[a-zA-Z0-9_.:-]{0,40}", fullmatch=True)
tags = st.integers(0, 2**63 - 1)
hot_methods = st.one_of(
    st.builds(commands.Basic.Deliver, short_strings, tags, st.booleans(), exchange_names, short_strings),
    st.builds(commands.Basic.Return, st.integers(0, 65535), short_strings, exchange_names, short_strings),
    st.builds(commands.Basic.Ack, tags, st.booleans()),
    st.builds(commands.Basic.Nack, tags, st.booleans(), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(hot_methods, st.integers(1, 65535))
def test_hot_methods_decode_as_pamqp_decodes_them(method, channel):
    data = frame.marshal(method, channel)
    _, _, expected = frame.unmarshal(data)
    [(decoded_channel, frame_type, decoded)] = frames.FrameReader(4096).feed(data)
    assert (decoded_channel, frame_type) == (channel, frames.FRAME_METHOD)
    assert type(decoded).__name__ == type(expected).__name__
    assert {name: getattr(decoded, name) for name in expected.__slots__} == {
        name: getattr(expected, name) for name in expected.__slots__
    }


@pytest.mark.parametrize(
    "method", [commands.Basic.Deliver("c", 1, True, "ex", "rk"), commands.Basic.Return(312, "NO_ROUTE", "ex", "rk")]
)
def test_a_hot_method_cut_short_is_a_protocol_error(method):
    payload = frame.marshal(method, 1)[7:-1]
    for cut in range(4, len(payload)):
        data = struct.pack(">BHI", 1, 1, cut) + payload[:cut] + b"\xce"
        with pytest.raises(ProtocolError, match="malformed"):
            frames.FrameReader(4096).feed(data + frames.HEARTBEAT)


@pytest.mark.parametrize("delivery_tag, multiple", [(0, False), (1, True), (2**63 - 1, False)])
def test_ack_frames_are_pamqps(delivery_tag, multiple):
    assert frames.ack_frame(5, delivery_tag, multiple) == frame.marshal(commands.Basic.Ack(delivery_tag, multiple), 5)


@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 10_000, 3 * 4088])
def test_content_frames_are_pamqps(size):
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    properties = Properties(message_id="m", headers={"k": 1})
    method = frame.marshal(commands.Basic.Publish(exchange="ex", routing_key="rk"), 3)
    expected = [method, frame.marshal(header.ContentHeader(0, size, properties), 3)]
    expected += [frame.marshal(ContentBody(body[i : i + 4088]), 3) for i in range(0, size, 4088)]
    assert b"".join(frames.content_frames(3, method, body, properties, 4096)) == b"".join(expected)


def test_what_is_left_of_a_partly_written_batch():
    from amphora.amqp.writer import _unsent

    chunks = [b"abc", memoryview(b"defgh"), b"ij"]
    for sent in range(11):
        assert b"".join(bytes(c) for c in _unsent(chunks, sent)) == b"abcdefghij"[sent:]


def test_a_body_split_across_reads_is_gathered_whole():
    body = bytes(range(256)) * 400  # 102,400 bytes in one body frame
    data = _message_frames(body, frame_max=131072) + frames.HEARTBEAT
    body_start = data.index(body)
    end_byte = body_start + len(body)
    splits = ([body_start + 5], [body_start + 5, end_byte], [end_byte, end_byte + 1], list(range(0, len(data), 9999)))
    for cuts in splits:
        decoded = _feed_through_one_buffer(frames.FrameReader(131072), data, cuts)
        assert [t for _, t, _ in decoded] == [frames.FRAME_METHOD, frames.FRAME_HEADER, frames.FRAME_BODY, 8]
        assert decoded[2][2] == body and isinstance(decoded[2][2], bytes)


def test_a_split_body_frame_is_checked_like_any():
    reader = frames.FrameReader(4096)
    with pytest.raises(ProtocolError, match="exceeds frame_max"):
        reader.feed(b"\x03\x00\x01\xff\xff\xff\xf0")  # only the head of a body frame claiming 4 GB
    reader = frames.FrameReader(4096)
    reader.feed(b"\x03\x00\x01\x00\x00\x00\x04ab")
    with pytest.raises(ProtocolError, match="frame end byte"):
        reader.feed(b"cdX")
