"""A typed handler and the types it takes, for tests/test_contracts.py and tests/test_asyncapi.py."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import TypedDict

import msgspec


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Box(msgspec.Struct):
    corner: Point
    size: float


class Options(TypedDict):
    scale: int


def paint(
    where: Point, box: Box, color: Color, when: datetime.datetime, data: bytes, options: Options, note: str | None
) -> dict[str, object]:
    """Everything the handler got, as Python types."""
    return {"types": [type(v).__name__ for v in (where, box, color, when, data, options, note)], "data": data}
