"""In-process buckets, for a single process without Redis.

One bucket per connection in a dict ordered by last use. A bucket that has refilled to
full is the same as no bucket at all, so idle ones are dropped as takes pass by (the
least recently used are checked first); that keeps the dict at the size of the
connections active within one refill time. `max_entries` bounds it anyway: past it the
least recently used bucket is dropped even if not full, which can only let that
connection through a little early, never hold it back.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from ratelimit.bucket import MICROS, BucketState, Limit, Verdict, full_in_us, take, to_micros
from ratelimit.keys import BucketKey

DEFAULT_MAX_ENTRIES = 100_000
# Idle buckets looked at per take: enough to keep up with any rate of new connections.
_EVICTION_CHECKS = 2


class LocalBuckets:
    backend = "local"
    fail_open_total = 0
    """In-process buckets never fail open; there for the same shape as `RedisBuckets`."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max_entries = max_entries
        self._clock = clock
        # key -> (state, when it is full again in µs): the second lets eviction skip math.
        self._buckets: OrderedDict[BucketKey, tuple[BucketState, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(
        self, key: BucketKey, limit: Limit, *, cost: int = 1, max_wait: float = 0.0
    ) -> Verdict:
        return self.take_now(key, limit, cost=cost, max_wait=max_wait)

    def take_now(
        self, key: BucketKey, limit: Limit, *, cost: int = 1, max_wait: float = 0.0
    ) -> Verdict:
        now_us = to_micros(self._clock())
        entry = self._buckets.get(key)
        state, verdict = take(
            limit,
            None if entry is None else entry[0],
            now_us,
            cost=cost,
            max_wait_us=math.floor(max_wait * MICROS),
        )
        if state is not None:
            self._buckets[key] = (state, state.updated_us + full_in_us(limit, state.level))
            self._buckets.move_to_end(key)
        self._evict(now_us)
        return verdict

    def _evict(self, now_us: int) -> None:
        for _ in range(_EVICTION_CHECKS):
            if not self._buckets:
                return
            key, (_, full_at) = next(iter(self._buckets.items()))
            if full_at > now_us:
                break
            del self._buckets[key]
        while len(self._buckets) > self._max_entries:
            self._buckets.popitem(last=False)
