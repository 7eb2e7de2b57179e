"""The wire format's serializers and bodies (pure logic)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amphora import JsonSerializer, RemoteException, WrongResult
from amphora.protocol import MalformedRequest, decode_reply, decode_request, encode_exception, encode_request

pytestmark = pytest.mark.timeout(60)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_and_standard_json_agree(value):
    fast, standard = JsonSerializer(), JsonSerializer(fast=False)
    assert fast.loads(fast.dumps(value)) == standard.loads(standard.dumps(value)) == value


def test_what_the_fast_libraries_refuse_falls_back_to_the_standard_library():
    serializer = JsonSerializer()
    assert serializer.loads(serializer.dumps(2**80)) == 2**80  # exact, both ways
    assert serializer.loads(serializer.dumps({1: "one"})) == {"1": "one"}


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    at: datetime.date


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2026, 11, 24, 19, 34, 32, 123456, tzinfo=datetime.UTC),
        datetime.datetime(2026, 11, 24, 19, 34, 32, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        datetime.datetime(2026, 11, 24, 19, 34),
        datetime.date(2026, 11, 24),
        datetime.time(19, 34, 32, 5),
        uuid.UUID(int=2**100),
        Colour.RED,
        Point(1, datetime.date(2026, 1, 2)),
        {"nested": [Colour.RED, {1: uuid.UUID(int=1)}]},  # the int key sends orjson's output to the fallback
    ],
)
def test_values_beyond_json_encode_alike_with_and_without_orjson(value):
    fast, standard = JsonSerializer(), JsonSerializer(fast=False)
    assert fast.loads(fast.dumps(value)) == standard.loads(standard.dumps(value))


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object(), 1j])
def test_values_json_cannot_carry_are_refused_with_and_without_orjson(value):
    for serializer in (JsonSerializer(), JsonSerializer(fast=False)):
        with pytest.raises(TypeError):
            serializer.dumps({"args": [value]})


@pytest.mark.parametrize(
    "text",
    [
        b"[9223372036854775807, -9223372036854775808, 18446744073709551616]",  # 64-bit limits and beyond
        b'{"n": 123456789012345678901234567890}',
        b"[1e400, NaN, -Infinity]",  # msgspec refuses these
        b'"\\ud800"',  # a lone surrogate
        b'{"a": 1, "a": 2}',
        b'"\\u00e9t\\u00e9"',
        b"[0.1, 1e-400, -0.0]",
        b'{"pad": "' + b"x" * 5000 + b'", "n": [1.5, 123456789012345678901234567890]}',  # large, long number
        b'{"pad": "' + b"x" * 5000 + b'", "n": [1.5, 2, 1e300]}',  # large, floats only
    ],
)
def test_decoding_gives_what_the_standard_library_gives(text):
    fast, standard = JsonSerializer(), JsonSerializer(fast=False)
    assert repr(fast.loads(text)) == repr(standard.loads(text))


def test_decoding_a_large_body_allocates_little_beyond_its_value():
    import tracemalloc

    serializer = JsonSerializer()
    body = serializer.dumps({"result": "x" * 87_000})
    tracemalloc.start()
    try:
        value = serializer.loads(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert value == {"result": "x" * 87_000}
    assert peak < 2 * len(body), f"{peak} bytes allocated to decode {len(body)}"  # orjson takes 12 times


@pytest.mark.parametrize(
    ("make_value", "count", "most_per_body"),
    [
        (lambda i: {"func": "add", "args": [i, i], "kwargs": {}}, 1000, 200),  # orjson's own keep 4 KiB
        (lambda i: {"result": f"{i:x}" * 10_000}, 20, 100_000),  # about 50 KB: orjson's keep 1 MiB
    ],
    ids=["small", "large"],
)
def test_bodies_own_no_spare_buffer(make_value, count, most_per_body):
    import tracemalloc

    serializer = JsonSerializer()
    tracemalloc.start()
    try:
        bodies = [serializer.dumps(make_value(i)) for i in range(count)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < count * most_per_body, f"{held / count:.0f} bytes per {len(bodies[-1])}-byte body"


def test_request_and_reply_bodies_round_trip():
    serializer = JsonSerializer()
    body = encode_request(serializer, "a.b", (1, "x"), {"k": [2]})
    assert decode_request(serializer, body) == ("a.b", [1, "x"], {"k": [2]})
    with pytest.raises(RemoteException) as info:
        decode_reply(serializer, encode_exception(serializer, "ValueError", ("x", object())))
    assert info.value.error_type == "ValueError" and info.value.args[0] == "x"  # unencodable args as repr
    with pytest.raises(WrongResult):
        decode_reply(serializer, b'{"neither": 1}')
    with pytest.raises(MalformedRequest, match="'args' must be a list"):
        decode_request(serializer, b'{"func": "f", "args": 3}')
