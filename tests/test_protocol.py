"""The wire format's serializers and bodies (pure logic)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amphora import JsonSerializer, MsgpackSerializer, RemoteException, WrongResult
from amphora.protocol import (
    HEADER_CAST,
    HEADER_CLIENT,
    HEADER_DEAD,
    HEADER_DEADLINE,
    HEADER_REASON,
    HEADER_SERVER,
    Death,
    MalformedRequest,
    death,
    decode_reply,
    decode_request,
    encode_exception,
    encode_request,
    past_deadline,
    refused_properties,
    reply_properties,
    request_properties,
)

pytestmark = pytest.mark.timeout(60)


def values(integers: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | integers | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )


json_values = values(st.integers())
msgpack_values = values(st.integers(min_value=-(2**63), max_value=2**64 - 1))  # MessagePack's integers


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_round_trips_and_agrees_with_the_standard_library(value):
    serializer = JsonSerializer()
    body = serializer.dumps(value)
    assert serializer.loads(body) == json.loads(body) == value


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_msgpack_round_trips(value):
    serializer = MsgpackSerializer()
    assert serializer.loads(serializer.dumps(value)) == value


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    at: datetime.date


@pytest.mark.parametrize(
    ("value", "arrives"),
    [
        (datetime.datetime(2026, 11, 24, 19, 34, 32, 123456, tzinfo=datetime.UTC), "2026-11-24T19:34:32.123456Z"),
        (
            datetime.datetime(2026, 11, 24, 19, 34, 32, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            "2026-11-24T19:34:32+02:00",
        ),
        (datetime.datetime(2026, 11, 24, 19, 34), "2026-11-24T19:34:00"),
        (datetime.date(2026, 11, 24), "2026-11-24"),
        (datetime.time(19, 34, 32, 5), "19:34:32.000005"),
        (datetime.timedelta(days=1, seconds=1), "P1DT1S"),
        (uuid.UUID(int=2**100), "00000010-0000-0000-0000-000000000000"),
        (decimal.Decimal("1.10"), "1.10"),
        (Colour.RED, "red"),
        (Point(1, datetime.date(2026, 1, 2)), {"x": 1, "at": "2026-01-02"}),
        ({"nested": [Colour.RED, {1: uuid.UUID(int=1)}]}, {"nested": ["red", {"1": str(uuid.UUID(int=1))}]}),
        ((1, (2,)), [1, [2]]),
        ({3}, [3]),
        (frozenset(["a"]), ["a"]),
        (b"\x00\xff", "AP8="),  # base64
        (bytearray(b"ab"), "YWI="),
        ({1: "int", 1.5: "float", Colour.RED: "enum"}, {"1": "int", "1.5": "float", "red": "enum"}),
        ([2**64, -(2**80)], [2**64, -(2**80)]),  # any size, exact
        ([math.nan, math.inf, -math.inf], [None, None, None]),  # JSON has none
    ],
)
def test_values_beyond_json_arrive_as_documented(value, arrives):
    serializer = JsonSerializer()
    assert serializer.loads(serializer.dumps(value)) == arrives


@pytest.mark.parametrize("value", [object(), 1j, {True: 1}, {None: 1}, {(1, 2): 1}, "\ud800"])
def test_values_json_cannot_carry_are_refused(value):
    with pytest.raises((TypeError, ValueError)):  # a lone surrogate: UnicodeEncodeError, a ValueError
        JsonSerializer().dumps({"args": [value]})


@pytest.mark.parametrize(
    "text",
    [
        b"[9223372036854775807, -9223372036854775808, 18446744073709551616]",  # 64-bit limits and beyond
        b'{"n": 123456789012345678901234567890}',
        b'{"a": 1, "a": 2}',
        b'"\\u00e9t\\u00e9"',
        b"[0.1, 1e-400, -0.0]",
        b'{"pad": "' + b"x" * 5000 + b'", "n": [1.5, 123456789012345678901234567890]}',  # large, long number
        b'{"pad": "' + b"x" * 5000 + b'", "n": [1.5, 2, 1e300]}',  # large, floats only
    ],
)
def test_decoding_gives_what_the_standard_library_gives(text):
    assert repr(JsonSerializer().loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", [b"NaN", b"[-Infinity]", b"1e400", b'"\\ud800"', b'"\xff"', b"[1] x", b"{'a': 1}"])
def test_what_is_not_json_is_refused(text):
    with pytest.raises(ValueError):  # msgspec.DecodeError: the request or reply is refused
        JsonSerializer().loads(text)


@pytest.mark.parametrize(
    "value",
    [
        {"func": "add", "args": [1, -2, 2**63, 2**64 - 1, -(2**63), 1.5, None, True], "kwargs": {"k": "v"}},
        {"result": ["é", b"\x00bytes", [], {}, "x" * 70_000, b"y" * 70_000]},
        {"exception": {"type": "ValueError", "args": ["x"], "traceback": "..."}},
    ],
)
def test_msgpack_is_what_msgpack_python_writes_and_reads(value):
    msgpack = pytest.importorskip("msgpack")
    serializer = MsgpackSerializer()
    assert serializer.dumps(value) == msgpack.packb(value, use_bin_type=True)
    assert serializer.loads(msgpack.packb(value, use_bin_type=True)) == value
    assert msgpack.unpackb(serializer.dumps(value), raw=False) == value


def test_msgpack_carries_bytes_and_non_string_keys_and_refuses_what_it_cannot():
    serializer = MsgpackSerializer()
    assert serializer.loads(serializer.dumps({1: b"\xff", "t": (1, 2), "s": {3}})) == {
        1: b"\xff",
        "t": [1, 2],
        "s": [3],
    }
    when = datetime.datetime(2026, 11, 24, 19, 34, tzinfo=datetime.UTC)
    assert serializer.loads(serializer.dumps(when)) == when  # a MessagePack timestamp
    for value in (2**64, object()):
        with pytest.raises((TypeError, OverflowError)):
            serializer.dumps(value)
    with pytest.raises(ValueError):
        serializer.loads(b"\xc1")  # never used in MessagePack


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
    assert peak < 2 * len(body), f"{peak} bytes allocated to decode {len(body)}"  # orjson took 12 times


@pytest.mark.parametrize(
    ("make_value", "count", "most_per_body"),
    [
        (lambda i: {"func": "add", "args": [i, i], "kwargs": {}}, 1000, 200),  # orjson's kept 4 KiB
        (lambda i: {"result": f"{i:x}" * 10_000}, 20, 60_000),  # about 50 KB: orjson's kept 1 MiB, msgspec's up
        # to half again (its buffer grows by halves)
    ],
    ids=["small", "large"],
)
def test_bodies_own_little_spare_buffer(make_value, count, most_per_body):
    import tracemalloc

    serializer = JsonSerializer()
    tracemalloc.start()
    try:
        bodies = [serializer.dumps(make_value(i)) for i in range(count)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < count * most_per_body, f"{held / count:.0f} bytes per {len(bodies[-1])}-byte body"


@pytest.mark.parametrize("serializer", [JsonSerializer(), MsgpackSerializer()], ids=["json", "msgpack"])
def test_threads_encode_at_once_and_a_huge_body_gives_its_buffer_back(serializer):
    values = [{"n": i, "pad": "x" * (i * 5000)} for i in range(40)] * 5
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(serializer.dumps, values))
    assert [serializer.loads(body) for body in bodies] == values
    assert serializer.loads(serializer.dumps("y" * 3_000_000)) == "y" * 3_000_000
    assert [len(buffer) for buffer in serializer._buffers] == [0]  # not 3 MB kept
    assert serializer.loads(serializer.dumps([1])) == [1]


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


def test_a_request_carries_its_caller_deadline_and_expiry_and_a_cast_no_reply_address():
    before = time.time()
    call = request_properties(
        request_id="r1", client_id="c1", content_type="application/json", content_encoding=None, timeout=2.5
    )
    headers = call.headers or {}
    assert (call.message_id, call.reply_to, call.expiration, call.delivery_mode) == ("r1", "c1", "2500", 2)
    assert headers[HEADER_CLIENT] == "c1" and HEADER_CAST not in headers
    assert int(before * 1000) + 2500 <= headers[HEADER_DEADLINE] <= time.time() * 1000 + 2500
    assert not past_deadline(headers)
    cast = request_properties(
        request_id="r2", client_id="c1", content_type="x", content_encoding=None, timeout=None, cast=True
    )
    cast_headers = cast.headers or {}
    assert cast.reply_to is None and cast.expiration is None and cast_headers[HEADER_CAST] is True
    assert HEADER_DEADLINE not in cast_headers and not past_deadline(cast_headers)
    assert past_deadline({HEADER_DEADLINE: int(before * 1000) - 1})


def test_a_refused_copy_keeps_the_call_but_not_its_way_back_to_the_caller():
    request = request_properties(
        request_id="r1", client_id="c1", content_type="x", content_encoding=None, timeout=5, headers={"mine": 1}
    )
    dead = refused_properties(request, "no function 'nope'" + "!" * 2000)
    headers = dead.headers or {}
    assert HEADER_CLIENT not in headers and headers["mine"] == 1 and headers[HEADER_DEAD] == "refused"
    assert headers[HEADER_REASON].startswith("no function") and len(headers[HEADER_REASON]) == 1000
    assert dead.expiration is None and dead.message_id == "r1" and dead.reply_to == "c1"
    reply = reply_properties(
        request_id="r1", server_name="s1", content_type="x", content_encoding=None, persistent=False
    )
    assert (reply.correlation_id, reply.delivery_mode, (reply.headers or {})[HEADER_SERVER]) == ("r1", 1, "s1")


@pytest.mark.parametrize(
    ("headers", "told"),
    [
        ({}, None),
        ({"x-death": "not a list"}, None),
        ({"x-death": []}, Death("expired", False)),
        ({"x-death": [{"reason": "rejected"}]}, Death("rejected", False)),
        ({"x-death": [{"reason": "rejected"}], "x-delivery-count": 1}, Death("rejected", True)),
    ],
)
def test_what_a_dead_lettered_copy_tells(headers, told):
    assert death(headers) == told
