"""Token-bucket math: pure, integer, with the clock passed in.

Algorithm: the classic token bucket. A bucket holds up to `burst` tokens and gains
`count` tokens every `period`; a request takes `cost` tokens. GCRA would need one number
less of state, but the classic form states "remaining" and "time until full" directly,
and those are what the `RateLimit-*` headers report.

Exact arithmetic, so a bucket never drifts however long it runs: the level is kept in
integer *units*, where one token is `unit` units and the bucket gains `step` units per
microsecond (`unit / step` is the rate reduced to lowest terms: 10/s is unit 100000,
step 1; 7/s is unit 1000000, step 7). Time is integer microseconds. Refill is then
`elapsed_us * step`, a whole number, and nothing is ever rounded away.

Waiting is a reservation: when the caller may wait up to `max_wait`, a take that lacks
tokens still succeeds if they will have refilled within that wait; the tokens are taken
at once (the level goes below zero) and the verdict says how long to wait first. Later
takes queue behind it, so waiting callers are served in order and the rate still holds.
A refused take changes nothing.

The Redis bucket (`ratelimit.redis_bucket`) runs this same arithmetic in Lua; the
numbers stay below 2**53 there (Lua numbers are doubles) because `Limit` bounds
`burst * unit` and the current time in microseconds is about 1.8e15.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MICROS = 1_000_000
# Largest level (burst * unit) a Limit may have, so Lua's doubles stay exact.
MAX_CAPACITY = 2**52


@dataclass(frozen=True, slots=True)
class Limit:
    """`count` tokens per `period_us` microseconds, at most `burst` at once."""

    count: int
    period_us: int
    burst: int
    unit: int = field(init=False, repr=False)
    """Units per token (the reduced period)."""
    step: int = field(init=False, repr=False)
    """Units gained per microsecond (the reduced count)."""

    def __post_init__(self) -> None:
        if self.count < 1 or self.period_us < 1 or self.burst < 1:
            raise ValueError("count, period and burst must be positive")
        divisor = math.gcd(self.count, self.period_us)
        object.__setattr__(self, "unit", self.period_us // divisor)
        object.__setattr__(self, "step", self.count // divisor)
        if self.capacity > MAX_CAPACITY:
            raise ValueError("burst * period is too large for an exact bucket")

    @property
    def capacity(self) -> int:
        """The level of a full bucket, in units."""
        return self.burst * self.unit

    @property
    def per_second(self) -> float:
        return self.count * MICROS / self.period_us


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one take.

    `allowed`: go ahead, after `wait_seconds` (0 unless a wait was reserved); when
    refused, `wait_seconds` is how long until the take could succeed. `remaining`: whole
    tokens left. `reset_seconds`: until the bucket is full again. `degraded`: no bucket
    was consulted (its store failed) and the request is let through (fail open).
    """

    allowed: bool
    wait_seconds: float
    remaining: int
    reset_seconds: float
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket's level (units; below zero while waits are reserved) and when it was
    last brought up to date (microseconds)."""

    level: int
    updated_us: int


def level_at(limit: Limit, state: BucketState | None, now_us: int) -> int:
    """The level at `now_us` after refill; an unknown bucket is full."""
    if state is None:
        return limit.capacity
    elapsed = now_us - state.updated_us
    if elapsed <= 0:
        # A clock that stepped back refills nothing; it never takes tokens away.
        return state.level
    return min(limit.capacity, state.level + elapsed * limit.step)


def take(
    limit: Limit,
    state: BucketState | None,
    now_us: int,
    *,
    cost: int = 1,
    max_wait_us: int = 0,
) -> tuple[BucketState | None, Verdict]:
    """Take `cost` tokens at `now_us`; the new state (unchanged when refused) and the
    verdict."""
    if cost < 1 or cost > limit.burst:
        raise ValueError("cost must be between 1 and the burst")
    level = level_at(limit, state, now_us)
    updated = now_us if state is None else max(now_us, state.updated_us)
    need = cost * limit.unit
    wait_us = 0 if level >= need else ceil_div(need - level, limit.step)
    allowed = wait_us <= max_wait_us
    if allowed:
        level -= need
        state = BucketState(level, updated)
    verdict = Verdict(
        allowed=allowed,
        wait_seconds=wait_us / MICROS,
        remaining=max(level, 0) // limit.unit,
        reset_seconds=full_in_us(limit, level) / MICROS,
    )
    return state, verdict


def full_in_us(limit: Limit, level: int) -> int:
    """Microseconds until a bucket at `level` is full again."""
    return ceil_div(limit.capacity - level, limit.step)


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def to_micros(seconds: float) -> int:
    return round(seconds * MICROS)


class TokenBucket:
    """One bucket in memory, driven by the clock value each call passes in."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._state: BucketState | None = None

    def take(self, now: float, cost: int = 1, *, max_wait: float = 0.0) -> Verdict:
        """Take `cost` tokens at `now` (seconds on any monotonic clock); reserve a wait
        of up to `max_wait` seconds when the tokens are not there yet."""
        self._state, verdict = take(
            self.limit,
            self._state,
            to_micros(now),
            cost=cost,
            max_wait_us=math.floor(max_wait * MICROS),
        )
        return verdict
