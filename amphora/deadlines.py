"""Deadlines: which keys are due at a given time, and when to wake up next (no clock, no timer of its own).

Each key is due a fixed ``lifetime`` after it was added. Keys of the same lifetime fall due in the order they
were added, so each lifetime keeps its keys in an insertion-ordered dict whose first entry is its next due:
a dict entry per key, and one wake-up for all. The caller passes the time and owns the timer: :meth:`add`
says when to arm it, :meth:`expire` (when it fires) what is due and when to arm it again. A wake-up stays
armed when its keys are removed first, so that keys added one after the other share it, until the caller
disarms it when no key is left.
"""

from __future__ import annotations

INFINITY = float("inf")


class Deadlines:
    """Deadlines by key, grouped by lifetime; the time of the wake-up the caller has armed."""

    def __init__(self) -> None:
        self._by_lifetime: dict[float, dict[str, float]] = {}
        self._wakeup = INFINITY  # when the caller's timer fires (infinity: none is armed)

    def add(self, key: str, lifetime: float, now: float) -> float | None:
        """Make ``key`` due at ``now + lifetime``; the time to arm the wake-up for if that is earlier than the
        armed one (the caller re-arms its timer), else None."""
        deadline = now + lifetime
        keys = self._by_lifetime.get(lifetime)
        if keys is None:
            keys = self._by_lifetime[lifetime] = {}
        keys[key] = deadline
        if deadline < self._wakeup:
            self._wakeup = deadline
            return deadline
        return None

    def remove(self, key: str, lifetime: float) -> None:
        """``key`` (added with ``lifetime``) is settled: it will never be due."""
        keys = self._by_lifetime.get(lifetime)
        if keys is None:
            return
        keys.pop(key, None)
        if not keys:
            del self._by_lifetime[lifetime]

    def disarm(self) -> None:
        """The caller closed its timer (nothing was left to wait for): the next :meth:`add` arms one."""
        self._wakeup = INFINITY

    def expire(self, now: float) -> tuple[list[str], float | None]:
        """The wake-up fired at ``now``: the keys due by then, forgotten (in deadline order within a lifetime),
        and the time to arm the next wake-up for (None: nothing is left)."""
        due: list[str] = []
        earliest = INFINITY
        for lifetime, keys in list(self._by_lifetime.items()):
            while keys:
                key, deadline = next(iter(keys.items()))
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                del keys[key]
                due.append(key)
            if not keys:
                del self._by_lifetime[lifetime]
        self._wakeup = earliest
        return due, None if earliest == INFINITY else earliest
