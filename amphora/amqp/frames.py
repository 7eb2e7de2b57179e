"""The protocol core: AMQP 0-9-1 frames to and from bytes, with no I/O.

pamqp encodes and decodes the method payloads (but for the hot methods, see :mod:`.methods`), ``.properties``
the property payloads; this module does the framing around them, checks every length against the negotiated
frame size before allocating, and turns any malformed input into :class:`~amphora.amqp.errors.ProtocolError`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pamqp import commands
from pamqp.base import Frame as Method
from pamqp.heartbeat import Heartbeat

from . import methods
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
_ACK_FRAME = struct.Struct(">BHIIqBB")  # frame head, method index, delivery tag, multiple, frame end
_ACK_INDEX = commands.Basic.Ack.index
BASIC_CLASS = 60
_END = bytes([FRAME_END])
_JOINED_BODY_MAX = MIN_FRAME_MAX - FRAME_OVERHEAD  # a body up to this size is copied into its message's buffer
HEADER_FRAME_OVERHEAD = FRAME_OVERHEAD + _HEADER_HEAD.size
"""Bytes of a content header frame besides the properties."""
SHORTSTR_MAX = 255


class ContentHeader(NamedTuple):
    """A decoded content header frame: the size of the body to follow, and the message's properties."""

    body_size: int
    properties: Properties


Payload = Method | methods.HotMethod | ContentHeader | bytes | None
DecodedFrame = tuple[int, int, Payload]  # (channel, frame type, payload)
Buffer = bytes | memoryview


class _SplitBody:
    """A body frame whose payload arrives in several reads: its pieces (copies), joined once it is complete."""

    __slots__ = ("channel", "missing", "pieces")

    def __init__(self, channel: int, first: Buffer, size: int) -> None:
        self.channel = channel
        self.pieces = [bytes(first)]
        self.missing = size - len(first)  # payload bytes still to come (the end byte follows them)


class FrameReader:
    """Accumulates bytes from the socket and yields the complete frames in them."""

    def __init__(self, frame_max: int = 131072) -> None:
        self._buffer = bytearray()
        self._wanted = 0  # bytes the buffer needs before its first frame is complete
        self._split_body: _SplitBody | None = None
        self.frame_max = frame_max

    def feed(self, data: Buffer) -> list[DecodedFrame]:
        """Add received bytes; return every frame they complete, in order.

        Frames are decoded straight from ``data`` when no partial frame is pending (the usual case), and
        only the incomplete tail is copied and kept: ``data`` may be a view of a buffer that the caller
        reuses for its next read. A body frame split across reads is gathered from copies of its pieces.
        """
        frames: list[DecodedFrame] = []
        if self._split_body is not None:
            rest = self._continue_body(data, frames)
            if rest is None:
                return frames
            data = rest
        buffer = self._buffer
        if not buffer:
            complete, offset = self._parse(data, data)
            frames += complete
            if offset < len(data) and not self._start_body(data, offset):
                buffer += memoryview(data)[offset:]
            return frames
        buffer += data
        if len(buffer) < self._wanted:
            return frames
        with memoryview(buffer) as view:
            complete, offset = self._parse(buffer, view)
        frames += complete
        del buffer[:offset]
        return frames

    def _start_body(self, data: Buffer, offset: int) -> bool:
        """Whether the incomplete frame at ``offset`` is a body frame now gathered as a split body."""
        if len(data) - offset < 7 or data[offset] != FRAME_BODY:
            return False
        _, channel, size = _FRAME_HEAD.unpack_from(data, offset)
        if size + FRAME_OVERHEAD > self.frame_max:
            raise ProtocolError(f"frame of {size} bytes exceeds frame_max {self.frame_max}")
        self._split_body = _SplitBody(channel, memoryview(data)[offset + 7 :], size)
        return True

    def _continue_body(self, data: Buffer, frames: list[DecodedFrame]) -> Buffer | None:
        """Add ``data`` to the split body; once it is complete, append it to ``frames`` and return the bytes
        after it (None while it is incomplete)."""
        body = self._split_body
        assert body is not None
        if body.missing:
            piece = bytes(data[: body.missing])
            body.pieces.append(piece)
            body.missing -= len(piece)
            data = data[len(piece) :]
        if body.missing or not data:
            return None  # the payload, or its end byte, is still to come
        if data[0] != FRAME_END:
            raise ProtocolError(f"frame end byte is {data[0]:#x}, expected {FRAME_END:#x}")
        frames.append((body.channel, FRAME_BODY, b"".join(body.pieces)))
        self._split_body = None
        return data[1:]

    def _parse(self, data: methods.Buffer, view: Buffer) -> tuple[list[DecodedFrame], int]:
        """The complete frames at the start of ``data`` and the offset after them; ``view`` slices it."""
        frames: list[DecodedFrame] = []
        offset = 0
        available = len(data)
        frame_type = 0
        try:
            while available - offset >= FRAME_OVERHEAD:
                frame_type, channel, size = _FRAME_HEAD.unpack_from(data, offset)
                if frame_type == 0x41 and data[offset : offset + 4] == b"AMQP":  # the broker refused our version
                    raise ProtocolError("the broker does not accept AMQP 0-9-1 (it answered with its protocol header)")
                if size + FRAME_OVERHEAD > self.frame_max:
                    raise ProtocolError(f"frame of {size} bytes exceeds frame_max {self.frame_max}")
                start = offset + 7
                end = start + size
                if end >= available:
                    self._wanted = end + 1 - offset
                    break
                if data[end] != FRAME_END:
                    raise ProtocolError(f"frame end byte is {data[end]:#x}, expected {FRAME_END:#x}")
                payload: Payload
                if frame_type == FRAME_BODY:
                    payload = bytes(view[start:end])
                elif frame_type == FRAME_METHOD:
                    payload = _decode_method(data, start, end)
                elif frame_type == FRAME_HEADER:
                    payload = _decode_header(bytes(view[start:end]))
                elif frame_type == FRAME_HEARTBEAT:
                    payload = None
                else:
                    raise ProtocolError(f"unknown frame type {frame_type}")
                frames.append((channel, frame_type, payload))
                offset = end + 1
            else:
                self._wanted = 0
        except ProtocolError:
            raise
        except Exception as exc:  # pamqp and struct raise many kinds on garbage: all mean a malformed frame
            raise ProtocolError(f"malformed frame of type {frame_type}: {exc!r}") from None
        return frames, offset


def _decode_method(data: methods.Buffer, start: int, end: int) -> Method | methods.HotMethod:
    """A method frame's payload: the hot methods by their fast decoders, any other by pamqp."""
    if end - start < _METHOD_INDEX.size:
        raise ProtocolError("method frame too short for a method index")
    index = _METHOD_INDEX.unpack_from(data, start)[0]
    decoder = methods.DECODERS.get(index)
    if decoder is not None:
        return decoder(data, start + 4, end)
    method_class = commands.INDEX_MAPPING.get(index)
    if method_class is None:
        raise ProtocolError("unknown method index")
    method = method_class()
    method.unmarshal(bytes(data[start + 4 : end]))
    return method


def _decode_header(payload: bytes) -> ContentHeader:
    class_id, _, body_size = _HEADER_HEAD.unpack_from(payload)
    if class_id != BASIC_CLASS:
        raise ProtocolError(f"content header of class {class_id}, not Basic")
    return ContentHeader(body_size, decode_properties(payload[_HEADER_HEAD.size :]))


def method_frame(channel: int, method: Method) -> bytes:
    """One method frame."""
    payload = _METHOD_INDEX.pack(method.index) + method.marshal()
    return b"".join((_FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)), payload, _END))


def ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """One Basic.Ack method frame, as pamqp would marshal it."""
    return _ACK_FRAME.pack(FRAME_METHOD, channel, 13, _ACK_INDEX, delivery_tag, multiple, FRAME_END)


def check_content_header(properties_size: int, frame_max: int) -> None:
    """Raise ValueError if properties of ``properties_size`` bytes do not fit in one content header frame:
    unlike a body, a header cannot be split, and the broker closes the connection on a frame over
    ``frame_max`` (FRAME_ERROR)."""
    if frame_max and properties_size + HEADER_FRAME_OVERHEAD > frame_max:
        raise ValueError(
            f"the message's properties and headers take {properties_size} bytes, more than the"
            f" {frame_max - HEADER_FRAME_OVERHEAD} that fit in one frame (frame_max {frame_max})"
        )


def check_publishable(routing_key: str, properties: Properties, frame_max: int) -> None:
    """Raise ValueError (or TypeError, for a header value AMQP cannot carry) for a message the broker could
    never take: a routing key over 255 bytes, or properties that do not fit in one frame of ``frame_max``
    bytes (0: unknown, not checked)."""
    if len(routing_key) * 4 > SHORTSTR_MAX and len(routing_key.encode()) > SHORTSTR_MAX:  # <= 4 bytes a character
        raise ValueError(f"routing key {routing_key[:20]!r}... is longer than {SHORTSTR_MAX} bytes")
    check_content_header(len(encode_properties(properties)), frame_max)


def content_frames(
    channel: int, method_bytes: bytes, body: bytes, properties: Properties, frame_max: int
) -> list[Buffer]:
    """The frames of one message, to be written in order: its already marshalled method frame, header, and
    body split to fit. A small message is one buffer; the body of a larger one is referenced, not copied.
    Raises ValueError, before anything is sent, if the properties do not fit in one frame."""
    properties_bytes = encode_properties(properties)
    check_content_header(len(properties_bytes), frame_max)
    size = len(body)
    small = [  # the small buffers up to the next body piece, joined into one
        method_bytes,
        _FRAME_HEAD.pack(FRAME_HEADER, channel, _HEADER_HEAD.size + len(properties_bytes)),
        _HEADER_HEAD.pack(BASIC_CLASS, 0, size),
        properties_bytes,
        _END,
    ]
    chunk = frame_max - FRAME_OVERHEAD
    if size <= _JOINED_BODY_MAX:
        if size:
            small += (_FRAME_HEAD.pack(FRAME_BODY, channel, size), body, _END)
        return [b"".join(small)]
    view = memoryview(body if type(body) is bytes else bytes(body))  # a mutable body could change under us
    parts: list[Buffer] = []
    for i in range(0, size, chunk):
        piece = view[i : i + chunk]
        small.append(_FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)))
        parts += (b"".join(small), piece)
        small = [_END]
    parts.append(_END)
    return parts
