"""Basic.Properties to and from the bytes of a content header, faster than pamqp's generic codec.

Every message sent and received carries properties, so this is on the hot path: fields are encoded by
their type directly, and decoded properties are filled in without pamqp's per-field dispatch and
validation. Field tables (``headers``) have fast paths for strings, integers and booleans and leave other
value types to pamqp. The bytes are identical to pamqp's (a test checks it).
"""

from __future__ import annotations

import datetime
import struct

from pamqp.commands import Basic
from pamqp.decode import embedded_value
from pamqp.encode import encode_table_value, table_integer

Properties = Basic.Properties

_SHORTSTR, _OCTET, _TIMESTAMP, _TABLE = range(4)
_KINDS = {"shortstr": _SHORTSTR, "octet": _OCTET, "timestamp": _TIMESTAMP, "table": _TABLE}
_FIELDS = tuple(
    (name, Properties.flags[name], _KINDS[getattr(Properties, "_" + name)]) for name in Properties.__slots__
)
_FLAGS = struct.Struct(">H")


def replaced(properties: Properties, **changes: object) -> Properties:
    """A copy of ``properties`` with the fields named in ``changes`` set to new values."""
    values = {slot: getattr(properties, slot) for slot in Properties.__slots__}
    values.update(changes)
    return Properties(**values)


_LENGTH = struct.Struct(">I")
_TABLE_INTEGERS = {
    ord("b"): struct.Struct(">b"),
    ord("s"): struct.Struct(">h"),
    ord("I"): struct.Struct(">i"),
    ord("l"): struct.Struct(">q"),
    ord("u"): struct.Struct(">H"),
    ord("i"): struct.Struct(">I"),
}
_TIMESTAMP_VALUE = struct.Struct(">Q")
_UTC = datetime.UTC


def encode_properties(properties: Properties) -> bytes:
    """The property flags and values of a content header."""
    flags = 0
    parts = []
    for name, flag, kind in _FIELDS:
        value = getattr(properties, name)
        if value is None or value == "":
            continue
        flags |= flag
        if kind == _SHORTSTR:
            raw = value.encode()
            if len(raw) > 255:
                raise ValueError(f"property {name} is longer than 255 bytes")
            parts.append(bytes((len(raw),)) + raw)
        elif kind == _OCTET:
            parts.append(bytes((value,)))
        elif kind == _TIMESTAMP:
            parts.append(_TIMESTAMP_VALUE.pack(_seconds(value)))
        else:
            parts.append(encode_table(value))
    return _FLAGS.pack(flags) + b"".join(parts)


def decode_properties(data: bytes) -> Properties:
    """Properties from the flags and values of a content header (IndexError/ValueError if malformed)."""
    properties = Properties.__new__(Properties)
    flags = _FLAGS.unpack_from(data)[0]
    if flags & 1:
        raise ValueError("continued property flags are not defined in AMQP 0-9-1")
    offset = 2
    for name, flag, kind in _FIELDS:
        if not flags & flag:
            setattr(properties, name, "" if name == "cluster_id" else None)
            continue
        if kind == _SHORTSTR:
            end = offset + 1 + data[offset]
            if end > len(data):
                raise ValueError(f"property {name} runs past the header")
            value: object = data[offset + 1 : end].decode()
            offset = end
        elif kind == _OCTET:
            value = data[offset]
            offset += 1
        elif kind == _TIMESTAMP:
            seconds = _TIMESTAMP_VALUE.unpack_from(data, offset)[0]
            value = datetime.datetime.fromtimestamp(seconds / 1000 if seconds > 0xFFFFFFFF else seconds, _UTC)
            offset += 8
        else:
            offset, value = decode_table(data, offset)
        setattr(properties, name, value)
    return properties


def _seconds(value: datetime.datetime | float) -> int:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)  # naive means UTC, as in pamqp
        return int(value.timestamp())
    return int(value)


def encode_table(table: dict[str, object]) -> bytes:
    """An AMQP field table, keys in sorted order as pamqp writes them."""
    parts = []
    for key in sorted(table):
        raw_key = key.encode()
        if len(raw_key) > 128:
            raise ValueError(f"header name {key[:20]!r}... is longer than 128 bytes")
        parts.append(bytes((len(raw_key),)) + raw_key)
        value = table[key]
        kind = type(value)
        if kind is str:
            raw = value.encode()  # type: ignore[attr-defined]
            parts.append(b"S" + _LENGTH.pack(len(raw)) + raw)
        elif kind is bool:
            parts.append(b"t\x01" if value else b"t\x00")
        elif kind is int:
            parts.append(table_integer(value))  # type: ignore[arg-type]
        else:
            parts.append(encode_table_value(value))  # type: ignore[arg-type]
    body = b"".join(parts)
    return _LENGTH.pack(len(body)) + body


def decode_table(data: bytes, offset: int) -> tuple[int, dict[str, object]]:
    """The field table at ``offset`` and the offset after it."""
    end = offset + 4 + _LENGTH.unpack_from(data, offset)[0]
    if end > len(data):
        raise ValueError("a field table runs past its frame")
    offset += 4
    table: dict[str, object] = {}
    while offset < end:
        key_end = offset + 1 + data[offset]
        key = data[offset + 1 : key_end].decode()
        kind = data[key_end]
        offset = key_end + 1
        value: object
        if kind == 0x53:  # "S": long string
            value_end = offset + 4 + _LENGTH.unpack_from(data, offset)[0]
            raw = data[offset + 4 : value_end]
            try:
                value = raw.decode()
            except UnicodeDecodeError:
                value = raw  # pamqp keeps undecodable strings as bytes too
            offset = value_end
        elif kind == 0x74:  # "t": boolean
            value = bool(data[offset])
            offset += 1
        elif kind in _TABLE_INTEGERS:
            number = _TABLE_INTEGERS[kind]
            value = number.unpack_from(data, offset)[0]
            offset += number.size
        else:
            consumed, value = embedded_value(data[key_end:end])
            offset = key_end + consumed
        if offset > end:
            raise ValueError("a field table value runs past its table")
        table[key] = value
    return end, table
