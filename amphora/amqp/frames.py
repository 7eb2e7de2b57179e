"""The protocol core: AMQP 0-9-1 frames to and from bytes, with no I/O.

pamqp encodes and decodes the method and property payloads; this module does the framing around them,
checks every length against the negotiated frame size before allocating, and turns any malformed input
into :class:`~amphora.amqp.errors.ProtocolError`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pamqp import commands
from pamqp.base import Frame as Method
from pamqp.heartbeat import Heartbeat

from .errors import ProtocolError
from .properties import Properties, decode_properties, encode_properties

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_OVERHEAD = 8  # 7 bytes of header, 1 end byte
MIN_FRAME_MAX = 4096  # the smallest frame_max the spec allows
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT = Heartbeat.value

_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_INDEX = struct.Struct(">I")
_HEADER_HEAD = struct.Struct(">HHQ")  # class id, weight (always 0), body size
BASIC_CLASS = 60
_END = bytes([FRAME_END])


class ContentHeader(NamedTuple):
    """A decoded content header frame: the size of the body to follow, and the message's properties."""

    body_size: int
    properties: Properties


Payload = Method | ContentHeader | bytes | None
DecodedFrame = tuple[int, int, Payload]  # (channel, frame type, payload)


class FrameReader:
    """Accumulates bytes from the socket and yields the complete frames in them."""

    def __init__(self, frame_max: int = 131072) -> None:
        self._buffer = bytearray()
        self.frame_max = frame_max

    def feed(self, data: bytes) -> list[DecodedFrame]:
        """Add received bytes; return every frame they complete, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[DecodedFrame] = []
        offset = 0
        available = len(buffer)
        while available - offset >= FRAME_OVERHEAD:
            if buffer[offset] == 0x41 and buffer[offset : offset + 4] == b"AMQP":  # "AMQP": version refused
                raise ProtocolError("the broker does not accept AMQP 0-9-1 (it answered with its protocol header)")
            frame_type, channel, size = _FRAME_HEAD.unpack_from(buffer, offset)
            if size + FRAME_OVERHEAD > self.frame_max:
                raise ProtocolError(f"frame of {size} bytes exceeds frame_max {self.frame_max}")
            end = offset + 7 + size
            if end >= available:
                break
            if buffer[end] != FRAME_END:
                raise ProtocolError(f"frame end byte is {buffer[end]:#x}, expected {FRAME_END:#x}")
            frames.append((channel, frame_type, _decode(frame_type, bytes(buffer[offset + 7 : end]))))
            offset = end + 1
        if offset:
            del buffer[:offset]
        return frames


def _decode(frame_type: int, payload: bytes) -> Payload:
    try:
        if frame_type == FRAME_BODY:
            return payload
        if frame_type == FRAME_METHOD:
            method_class = commands.INDEX_MAPPING.get(_METHOD_INDEX.unpack_from(payload)[0])
            if method_class is None:
                raise ProtocolError("unknown method index")
            method = method_class()
            method.unmarshal(payload[4:])
            return method
        if frame_type == FRAME_HEADER:
            class_id, _, body_size = _HEADER_HEAD.unpack_from(payload)
            if class_id != BASIC_CLASS:
                raise ProtocolError(f"content header of class {class_id}, not Basic")
            return ContentHeader(body_size, decode_properties(payload[_HEADER_HEAD.size :]))
        if frame_type == FRAME_HEARTBEAT:
            return None
    except ProtocolError:
        raise
    except Exception as exc:  # pamqp raises many kinds on garbage: all mean a malformed frame
        raise ProtocolError(f"malformed frame of type {frame_type}: {exc!r}") from None
    raise ProtocolError(f"unknown frame type {frame_type}")


def _frame(frame_type: int, channel: int, payload: bytes | memoryview) -> bytes:
    return b"".join((_FRAME_HEAD.pack(frame_type, channel, len(payload)), payload, _END))


def method_frame(channel: int, method: Method) -> bytes:
    """One method frame."""
    return _frame(FRAME_METHOD, channel, _METHOD_INDEX.pack(method.index) + method.marshal())


def content_frames(channel: int, method_bytes: bytes, body: bytes, properties: Properties, frame_max: int) -> bytes:
    """The frames of one message: its already marshalled method frame, header, and body split to fit."""
    header = _HEADER_HEAD.pack(BASIC_CLASS, 0, len(body)) + encode_properties(properties)
    parts = [method_bytes, _frame(FRAME_HEADER, channel, header)]
    chunk = frame_max - FRAME_OVERHEAD
    if len(body) <= chunk:
        if body:
            parts.append(_frame(FRAME_BODY, channel, body))
    else:
        view = memoryview(body)
        parts.extend(_frame(FRAME_BODY, channel, view[i : i + chunk]) for i in range(0, len(body), chunk))
    return b"".join(parts)
