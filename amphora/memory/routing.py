"""Which bindings of an exchange a message matches: RabbitMQ's direct, fanout, topic and headers exchanges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


def binding_matches(
    exchange_type: str,
    binding_key: str,
    binding_arguments: Mapping[str, Any],
    routing_key: str,
    headers: Mapping[str, Any],
) -> bool:
    """Whether a message published with ``routing_key`` and ``headers`` goes through one binding."""
    if exchange_type == "direct":
        return binding_key == routing_key
    if exchange_type == "fanout":
        return True
    if exchange_type == "topic":
        return topic_matches(binding_key, routing_key)
    return headers_match(binding_arguments, headers)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """A topic binding: ``*`` stands for exactly one dot-separated word, ``#`` for zero or more."""
    return _words_match(pattern.split("."), routing_key.split("."))


def _words_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[start:]) for start in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])


def headers_match(binding_arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """A headers binding: ``x-match`` ``all`` (the default) or ``any`` of its other arguments must be among the
    message's headers with the same value (a None value: any value). Arguments named ``x-...`` are not matched."""
    wanted = {name: value for name, value in binding_arguments.items() if not name.startswith("x-")}
    hits = (name in headers and (value is None or headers[name] == value) for name, value in wanted.items())
    if str(binding_arguments.get("x-match", "all")).startswith("any"):
        return any(hits)
    return all(hits)
