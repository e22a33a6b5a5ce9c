"""The bucket math, driven by an injected clock: exact over any length of time."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit.bucket import (
    MAX_CAPACITY,
    BucketState,
    Limit,
    TokenBucket,
    Verdict,
    take,
)

SECOND = 1_000_000


def ten_per_second_burst_five() -> TokenBucket:
    return TokenBucket(Limit(count=10, period_us=SECOND, burst=5))


def test_a_full_bucket_allows_exactly_the_burst_at_once() -> None:
    bucket = ten_per_second_burst_five()
    verdicts = [bucket.take(0.0) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts[:5]] == [4, 3, 2, 1, 0]
    assert verdicts[5] == Verdict(allowed=False, wait_seconds=0.1, remaining=0, reset_seconds=0.5)


def test_then_one_token_every_100_ms_and_not_a_microsecond_earlier() -> None:
    bucket = ten_per_second_burst_five()
    for _ in range(5):
        bucket.take(0.0)
    for tick in range(1, 51):
        just_before = bucket.take(tick / 10 - 0.000001)
        assert not just_before.allowed
        assert just_before.wait_seconds == pytest.approx(0.000001)
        assert bucket.take(tick / 10).allowed
        assert not bucket.take(tick / 10).allowed


def test_a_long_idle_refills_to_the_burst_only() -> None:
    bucket = ten_per_second_burst_five()
    for _ in range(5):
        bucket.take(0.0)
    later = 3600.0
    assert [bucket.take(later).allowed for _ in range(6)] == [True] * 5 + [False]


def test_remaining_and_reset_report_the_level() -> None:
    bucket = ten_per_second_burst_five()
    bucket.take(0.0)
    verdict = bucket.take(0.0)
    assert (verdict.remaining, verdict.reset_seconds) == (3, 0.2)
    # Half a token back after 50 ms: still 3 whole ones, full 50 ms sooner.
    verdict = bucket.take(0.05)
    assert (verdict.remaining, verdict.reset_seconds) == (2, 0.25)


def test_hammering_for_a_long_time_allows_burst_plus_rate_times_time_exactly() -> None:
    # A take every millisecond for 100 s: tokens come at exactly 10/s, none lost.
    bucket = ten_per_second_burst_five()
    allowed = sum(bucket.take(ms / 1000).allowed for ms in range(100_001))
    assert allowed == 5 + 100 * 10


@pytest.mark.parametrize(
    ("count", "period_s", "burst"), [(7, 1, 3), (600, 60, 1), (1, 3600, 2), (13, 7, 4)]
)
def test_odd_rates_never_drift(count: int, period_s: int, burst: int) -> None:
    # Take the moment each token is due, for 20 000 tokens' worth of periods: the count
    # stays exactly burst + rate * time, however the period divides.
    limit = Limit(count, period_s * SECOND, burst)
    periods = 20_000 // count
    horizon_us = periods * period_s * SECOND
    state: BucketState | None = None
    now_us = allowed = 0
    while now_us <= horizon_us:
        state, verdict = take(limit, state, now_us)
        if verdict.allowed:
            allowed += 1
        else:
            now_us += round(verdict.wait_seconds * SECOND)
    assert allowed == burst + periods * count


def test_a_waiting_caller_reserves_a_token_and_later_ones_queue_behind() -> None:
    bucket = ten_per_second_burst_five()
    for _ in range(5):
        bucket.take(0.0)
    waits = [bucket.take(0.0, max_wait=0.35) for _ in range(4)]
    assert [(v.allowed, v.wait_seconds) for v in waits] == [
        (True, 0.1),
        (True, 0.2),
        (True, 0.3),
        (False, 0.4),
    ]
    # The refused one reserved nothing: at 0.3 s the three reservations have their
    # tokens and the next arrives at 0.4 s.
    assert bucket.take(0.3).wait_seconds == pytest.approx(0.1)
    assert bucket.take(0.4).allowed


def test_a_clock_stepping_back_grants_nothing() -> None:
    bucket = ten_per_second_burst_five()
    for _ in range(5):
        bucket.take(10.0)
    assert not bucket.take(9.0).allowed
    assert not bucket.take(10.05).allowed
    assert bucket.take(10.1).allowed


def test_a_take_may_cost_several_tokens() -> None:
    bucket = ten_per_second_burst_five()
    assert bucket.take(0.0, cost=3).remaining == 2
    refused = bucket.take(0.0, cost=3)
    assert (refused.allowed, refused.wait_seconds, refused.remaining) == (False, 0.1, 2)
    assert bucket.take(0.1, cost=3).allowed


@pytest.mark.parametrize("cost", [0, -1, 6])
def test_a_cost_outside_one_to_burst_is_a_bug(cost: int) -> None:
    with pytest.raises(ValueError, match="cost"):
        ten_per_second_burst_five().take(0.0, cost=cost)


def test_limits_reduce_to_lowest_terms() -> None:
    per_minute = Limit(600, 60 * SECOND, 10)
    per_second = Limit(10, SECOND, 10)
    assert (per_minute.unit, per_minute.step) == (per_second.unit, per_second.step) == (100_000, 1)
    assert per_minute.per_second == 10.0


@pytest.mark.parametrize(
    ("count", "period_us", "burst"), [(0, SECOND, 1), (1, 0, 1), (1, SECOND, 0)]
)
def test_limits_must_be_positive(count: int, period_us: int, burst: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Limit(count, period_us, burst)


def test_a_limit_too_large_for_exact_lua_arithmetic_is_refused() -> None:
    day = 86_400 * SECOND
    assert Limit(1, day, MAX_CAPACITY // day).capacity <= MAX_CAPACITY
    with pytest.raises(ValueError, match="too large"):
        Limit(1, day, MAX_CAPACITY // day + 1)


# --- against a model in exact fractions -------------------------------------------------


class FractionBucket:
    """The textbook bucket, in exact rational seconds and tokens."""

    def __init__(self, count: int, period_s: int, burst: int) -> None:
        self.rate = Fraction(count, period_s)
        self.burst = Fraction(burst)
        self.tokens = self.burst
        self.at: Fraction | None = None

    def take(self, now: Fraction, cost: int) -> bool:
        if self.at is not None and now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now if self.at is None else max(self.at, now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    count=st.integers(1, 50),
    period_s=st.integers(1, 90),
    burst=st.integers(1, 20),
    steps=st.lists(
        st.tuples(st.integers(0, 3 * SECOND), st.integers(1, 3)), min_size=1, max_size=80
    ),
)
def test_every_verdict_matches_exact_rational_arithmetic(
    count: int, period_s: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    limit = Limit(count, period_s * SECOND, burst)
    model = FractionBucket(count, period_s, burst)
    state: BucketState | None = None
    now_us = 0
    for gap_us, cost in steps:
        now_us += gap_us
        cost = min(cost, burst)
        state, verdict = take(limit, state, now_us, cost=cost)
        assert verdict.allowed == model.take(Fraction(now_us, SECOND), cost)
        assert verdict.remaining == int(model.tokens)
        if not verdict.allowed:
            # The wait is the exact time to the missing tokens, rounded up to a µs.
            missing = (cost - model.tokens) / model.rate
            assert round(verdict.wait_seconds * SECOND) == -(-missing * SECOND // 1)
