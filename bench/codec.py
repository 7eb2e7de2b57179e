"""Encode and decode CPU of amphora's bodies: amphora's serializers against orjson and the standard library.

``python -m bench.codec`` prints the best of 7 timings, in microseconds per body, of a small request
(``add(1, 2)``) and of W3's request (64 KiB of random bytes as base64, 87 KB of JSON). orjson is measured
only where it is installed (amphora does not need it).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from amphora import JsonSerializer, MsgpackSerializer


def codecs() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    """Name -> (encode, decode)."""
    encoder, decoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False), json.JSONDecoder()
    found: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "JsonSerializer (msgspec)": (JsonSerializer().dumps, JsonSerializer().loads),
        "MsgpackSerializer (msgspec)": (MsgpackSerializer().dumps, MsgpackSerializer().loads),
        "json (standard library)": (lambda v: encoder.encode(v).encode(), lambda b: decoder.decode(b.decode())),
    }
    try:
        orjson = importlib.import_module("orjson")
    except ImportError:
        return found
    # amphora used to copy orjson's output: its bytes keep orjson's whole working buffer
    found["orjson (+ exact copy)"] = (lambda v: memoryview(orjson.dumps(v)).tobytes(), orjson.loads)
    return found


def per_call(function: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6


def main() -> None:
    bodies = {
        "small": ({"func": "add", "args": [1, 2], "kwargs": {}}, 100_000),
        "64 KiB": ({"func": "echo", "args": [base64.b64encode(os.urandom(65536)).decode()], "kwargs": {}}, 1_000),
    }
    print(f"{'body':8}  {'codec':28}  {'bytes':>7}  {'encode us':>9}  {'decode us':>9}")
    for body_name, (value, number) in bodies.items():
        for codec_name, (encode, decode) in codecs().items():
            data = encode(value)
            assert decode(data) == value
            encoding, decoding = per_call(partial(encode, value), number), per_call(partial(decode, data), number)
            print(f"{body_name:8}  {codec_name:28}  {len(data):7}  {encoding:9.2f}  {decoding:9.2f}")


if __name__ == "__main__":
    main()
