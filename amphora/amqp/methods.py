"""Fast decoders for the methods on the hot path: Basic.Deliver, Basic.Return, Basic.Ack and Basic.Nack.

Every consumed message starts with a Basic.Deliver and every publisher confirm is a Basic.Ack, so these
are decoded with :mod:`struct` straight from the receive buffer into named tuples, instead of through
pamqp's generic per-field path. The fields and their values are pamqp's (a test checks it); every other
method keeps pamqp's decoding. On malformed input the decoders raise IndexError, ValueError or
struct.error, which the frame reader turns into ProtocolError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from pamqp.commands import Basic

Buffer = bytes | bytearray | memoryview


class Deliver(NamedTuple):
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str


class Return(NamedTuple):
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str


class Ack(NamedTuple):
    delivery_tag: int
    multiple: bool


class Nack(NamedTuple):
    delivery_tag: int
    multiple: bool
    requeue: bool


_TAG_AND_BITS = struct.Struct(">qB")  # signed, as pamqp decodes a longlong
_SHORT = struct.Struct(">H")


def _short_str(data: Buffer, offset: int) -> tuple[str, int]:
    """The short string at ``offset`` and the offset after it."""
    end = offset + 1 + data[offset]
    return str(data[offset + 1 : end], "utf-8"), end


def _checked(end: int, frame_end: int) -> None:
    if end > frame_end:
        raise ValueError("method arguments run past the end of the frame")


def decode_deliver(data: Buffer, offset: int, frame_end: int) -> Deliver:
    consumer_tag, offset = _short_str(data, offset)
    delivery_tag, bits = _TAG_AND_BITS.unpack_from(data, offset)
    exchange, offset = _short_str(data, offset + 9)
    routing_key, offset = _short_str(data, offset)
    _checked(offset, frame_end)
    return Deliver(consumer_tag, delivery_tag, bool(bits & 1), exchange, routing_key)


def decode_return(data: Buffer, offset: int, frame_end: int) -> Return:
    reply_code = _SHORT.unpack_from(data, offset)[0]
    reply_text, offset = _short_str(data, offset + 2)
    exchange, offset = _short_str(data, offset)
    routing_key, offset = _short_str(data, offset)
    _checked(offset, frame_end)
    return Return(reply_code, reply_text, exchange, routing_key)


def decode_ack(data: Buffer, offset: int, frame_end: int) -> Ack:
    _checked(offset + 9, frame_end)
    delivery_tag, bits = _TAG_AND_BITS.unpack_from(data, offset)
    return Ack(delivery_tag, bool(bits & 1))


def decode_nack(data: Buffer, offset: int, frame_end: int) -> Nack:
    _checked(offset + 9, frame_end)
    delivery_tag, bits = _TAG_AND_BITS.unpack_from(data, offset)
    return Nack(delivery_tag, bool(bits & 1), bool(bits & 2))


HotMethod = Deliver | Return | Ack | Nack
DECODERS: dict[int, Callable[[Buffer, int, int], HotMethod]] = {
    Basic.Deliver.index: decode_deliver,
    Basic.Return.index: decode_return,
    Basic.Ack.index: decode_ack,
    Basic.Nack.index: decode_nack,
}
"""Decoder by method index; each takes the buffer, the offset of the arguments and the frame's end."""
