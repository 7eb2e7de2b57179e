"""The frame codec (pure logic, no broker)."""

import pytest
from pamqp import commands

from amphora.amqp import Properties, frames
from amphora.amqp.errors import ProtocolError


def _message_frames(body: bytes, frame_max: int = 4096) -> bytes:
    method = frames.method_frame(1, commands.Basic.Deliver("ctag", 7, False, "ex", "rk"))
    return frames.content_frames(1, method, body, Properties(message_id="m1"), frame_max)


def test_frames_split_anywhere_are_reassembled():
    body = bytes(range(256)) * 40  # 10,240 bytes: three body frames at frame_max 4096
    data = _message_frames(body) + frames.HEARTBEAT
    for cut in (1, 7, 8, 100, 4097, len(data) - 1):
        reader = frames.FrameReader(4096)
        decoded = reader.feed(data[:cut]) + reader.feed(data[cut:])
        kinds = [frame_type for _, frame_type, _ in decoded]
        assert kinds == [frames.FRAME_METHOD, frames.FRAME_HEADER] + [frames.FRAME_BODY] * 3 + [frames.FRAME_HEARTBEAT]
        assert b"".join(p for _, t, p in decoded if t == frames.FRAME_BODY) == body
        assert decoded[1][2].properties.message_id == "m1"
        assert decoded[0][2].delivery_tag == 7


def test_every_body_frame_fits_frame_max():
    reader = frames.FrameReader(4096)
    decoded = reader.feed(_message_frames(b"x" * 20000, frame_max=4096))
    assert all(len(p) <= 4096 - frames.FRAME_OVERHEAD for _, t, p in decoded if t == frames.FRAME_BODY)


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
        (b"\x01\x00\x00\x00\x00\x00\x05\x00\x3c\x00\x28\x01\xce", "malformed"),
        (b"AMQP\x00\x00\x09\x01", "does not accept"),
    ],
)
def test_garbage_is_a_protocol_error(data, message):
    with pytest.raises(ProtocolError, match=message):
        frames.FrameReader(4096).feed(data)
