"""gzip of large message bodies, marked in ``content_encoding``, with a bound on what unpacking may produce."""

from __future__ import annotations

import zlib

GZIP = "gzip"
DEFAULT_THRESHOLD = 1024 * 1024
"""Bodies from this many bytes up are compressed unless told otherwise."""
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
"""The largest body, packed or unpacked, a server accepts unless told otherwise."""


class BodyRefused(ValueError):
    """A body that is too large, or packed in a way that cannot be unpacked; the message says why."""


def compress(body: bytes, threshold: int | None) -> tuple[bytes, str | None]:
    """``(body, content_encoding)``: gzipped when at least ``threshold`` bytes (None: never) and smaller so."""
    if threshold is None or len(body) < threshold:
        return body, None
    packed = zlib.compress(body, 6, wbits=31)  # wbits 31: the gzip container
    return (packed, GZIP) if len(packed) < len(body) else (body, None)


def decompress(body: bytes, encoding: str | None, max_size: int) -> bytes:
    """The unpacked body; BodyRefused if it is, or unpacks to, more than ``max_size`` bytes (a gzip bomb
    stops there), or its encoding is unknown or broken."""
    if len(body) > max_size:
        raise BodyRefused(f"the body has {len(body)} bytes, over the limit of {max_size}")
    if not encoding or encoding == "identity":
        return body
    if encoding != GZIP:
        raise BodyRefused(f"unsupported content encoding {encoding!r}")
    unpacker = zlib.decompressobj(wbits=47)  # 47: gzip or zlib header, detected
    try:
        unpacked = unpacker.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise BodyRefused(f"broken gzip body: {exc}") from None
    if len(unpacked) > max_size or unpacker.unconsumed_tail:
        raise BodyRefused(f"the body unpacks to over the limit of {max_size} bytes")
    return unpacked
