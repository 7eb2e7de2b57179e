"""Which bindings of an exchange a message matches: RabbitMQ's direct, fanout, topic and headers exchanges;
and an exchange's bindings, indexed for routing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Binding:
    queue: str
    routing_key: str
    arguments: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two bindings the same binding."""
        return self.queue, self.routing_key, repr(sorted(self.arguments.items()))


class Bindings:
    """The bindings of one exchange, indexed so that routing and removing a queue do not scan them all
    where they need not (a direct exchange of ten thousand per-key queues)."""

    def __init__(self, exchange_type: str) -> None:
        self.exchange_type = exchange_type
        self._by_key: dict[tuple[str, str, str], Binding] = {}
        self._by_routing_key: dict[str, dict[tuple[str, str, str], Binding]] = {}
        self._by_queue: dict[str, dict[tuple[str, str, str], Binding]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, binding: Binding) -> None:
        key = binding.key
        if key not in self._by_key:
            self._by_key[key] = binding
            self._by_routing_key.setdefault(binding.routing_key, {})[key] = binding
            self._by_queue.setdefault(binding.queue, {})[key] = binding

    def remove(self, binding: Binding) -> bool:
        """Remove a binding; False if there was none such."""
        key = binding.key
        if self._by_key.pop(key, None) is None:
            return False
        for index, name in ((self._by_routing_key, binding.routing_key), (self._by_queue, binding.queue)):
            del index[name][key]
            if not index[name]:
                del index[name]
        return True

    def remove_queue(self, queue: str) -> bool:
        """Remove every binding of ``queue``; False if it had none."""
        bindings = list(self._by_queue.get(queue, {}).values())
        for binding in bindings:
            self.remove(binding)
        return bool(bindings)

    def queues(self, routing_key: str, headers: Mapping[str, Any]) -> list[str]:
        """The names of the queues a message published with ``routing_key`` and ``headers`` goes to."""
        if self.exchange_type == "direct":
            candidates: Iterable[Binding] = self._by_routing_key.get(routing_key, {}).values()
        elif self.exchange_type == "fanout":
            return list(self._by_queue)
        else:
            candidates = self._by_key.values()
        matched = (
            binding.queue
            for binding in candidates
            if binding_matches(self.exchange_type, binding.routing_key, binding.arguments, routing_key, headers)
        )
        return list(dict.fromkeys(matched))
