"""What checking arguments by type hints costs a server per request (``AmqpRpcServer(validate=...)``).

``python -m bench.validation`` prints the best of 7 timings, in CPU microseconds per request, of decoding a
request body as the server does (``decode_request``), then of decoding it and converting its arguments
(``Validator.arguments``), for three handlers: ``add(x: int, y: int)``, a handler taking a dataclass and an
enum, and one taking a list of 1,000 integers. The difference is what ``validate=True`` (the default) adds
to each call of an annotated handler; unannotated handlers, and ``validate=False``, pay nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from amphora import JsonSerializer
from amphora.protocol import decode_request, encode_request
from amphora.validation import Validator, build_validator


class Unit(enum.Enum):
    METRE = "m"
    FOOT = "ft"


@dataclasses.dataclass
class Point:
    x: float
    y: float


def add(x: int, y: int) -> int:
    return x + y


def distance(a: Point, b: Point, unit: Unit = Unit.METRE) -> float:
    return 0.0


def total(values: list[int]) -> int:
    return sum(values)


WORKLOADS: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], int]] = {
    "add(1, 2)": (add, (1, 2), {}, 100_000),
    "distance(2 points, unit)": (distance, ({"x": 1, "y": 2}, {"x": 3.5, "y": 4}), {"unit": "ft"}, 50_000),
    "total(1,000 ints)": (total, (list(range(1000)),), {}, 2_000),
}


def per_call(function: Callable[[], object], number: int) -> float:
    """CPU microseconds per call, the best of 7 (CPU time: other processes on the machine count less)."""
    return min(timeit.repeat(function, number=number, repeat=7, timer=time.process_time)) / number * 1e6


def decode_and_validate(serializer: JsonSerializer, body: bytes, validator: Validator) -> object:
    _, args, kwargs = decode_request(serializer, body)
    return validator.arguments(args, kwargs)


def main() -> None:
    serializer = JsonSerializer()
    print(f"{'request':26}  {'decode us':>9}  {'+ validate us':>13}  {'added us':>8}")
    for label, (func, args, kwargs, number) in WORKLOADS.items():
        body = encode_request(serializer, func.__name__, args, kwargs)
        validator = build_validator(func.__name__, func, context=False)
        assert validator is not None

        plain = per_call(partial(decode_request, serializer, body), number)
        checked = per_call(partial(decode_and_validate, serializer, body, validator), number)
        print(f"{label:26}  {plain:9.2f}  {checked:13.2f}  {checked - plain:8.2f}")


if __name__ == "__main__":
    main()
