"""A small in-process cache with a time-to-live and a size bound.

An expired entry is no longer returned by `get`, but it is kept (until replaced, dropped
by a change notification or pushed out by the size bound) so that `stale` can still
serve it while the store is unreachable: expired means "re-check", not "wrong". A change
notification means wrong, so `discard` removes the entry for good. The bound protects
memory when a caller sprays unknown keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 100_000


class LocalCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at < self._clock():
            return None
        return value

    def stale(self, key: K) -> V | None:
        """The entry even if it has expired: the last known value, for outages."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: K, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self._max_entries:
            # Dicts keep insertion order: the first key is the oldest entry.
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + self._ttl, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def discard_matching(self, predicate: Callable[[K], bool]) -> int:
        doomed = [key for key in self._entries if predicate(key)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()
