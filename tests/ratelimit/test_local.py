"""In-process buckets: one per connection, idle ones dropped, the dict bounded."""

from __future__ import annotations

from ratelimit.bucket import Limit
from ratelimit.keys import BucketKey
from ratelimit.limiter import RateLimiter
from ratelimit.local import LocalBuckets
from ratelimit.policy import RateLimitPolicy

SECOND = 1_000_000
TEN_PER_SECOND = Limit(10, SECOND, 2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(connection: str, integration: str = "github", environment: int = 1) -> BucketKey:
    return BucketKey(environment, integration, connection)


def test_each_connection_has_its_own_bucket() -> None:
    buckets = LocalBuckets(clock=Clock())
    for _ in range(2):
        assert buckets.take_now(key("a"), TEN_PER_SECOND).allowed
    assert not buckets.take_now(key("a"), TEN_PER_SECOND).allowed
    assert buckets.take_now(key("b"), TEN_PER_SECOND).allowed
    assert buckets.take_now(key("a", integration="slack"), TEN_PER_SECOND).allowed
    assert buckets.take_now(key("a", environment=2), TEN_PER_SECOND).allowed


def test_the_clock_drives_refill() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    for _ in range(2):
        buckets.take_now(key("a"), TEN_PER_SECOND)
    refused = buckets.take_now(key("a"), TEN_PER_SECOND)
    assert (refused.allowed, refused.wait_seconds) == (False, 0.1)
    clock.now += 0.1
    assert buckets.take_now(key("a"), TEN_PER_SECOND).allowed


def test_buckets_that_refilled_are_dropped_as_takes_pass_by() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    for connection in ("a", "b", "c"):
        buckets.take_now(key(connection), TEN_PER_SECOND)
    assert len(buckets) == 3
    clock.now += 0.1  # one token back: every bucket is full again
    buckets.take_now(key("d"), TEN_PER_SECOND)
    buckets.take_now(key("e"), TEN_PER_SECOND)
    assert len(buckets) <= 3
    # Dropping a full bucket forgets nothing: it comes back full.
    assert [buckets.take_now(key("a"), TEN_PER_SECOND).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]


def test_a_bucket_still_refilling_is_kept() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock=clock)
    for _ in range(2):
        buckets.take_now(key("busy"), TEN_PER_SECOND)
    clock.now += 0.05
    for connection in ("x", "y", "z"):
        buckets.take_now(key(connection), TEN_PER_SECOND)
    assert not buckets.take_now(key("busy"), TEN_PER_SECOND).allowed


def test_the_dict_never_grows_past_its_bound() -> None:
    buckets = LocalBuckets(max_entries=50, clock=Clock())
    for index in range(500):
        buckets.take_now(key(f"c{index}"), TEN_PER_SECOND)
        assert len(buckets) <= 50


def test_a_refused_take_stores_nothing() -> None:
    buckets = LocalBuckets(clock=Clock())
    one_at_a_time = Limit(1, SECOND, 1)
    assert buckets.take_now(key("a"), one_at_a_time).allowed
    assert not buckets.take_now(key("a"), one_at_a_time).allowed
    assert len(buckets) == 1


async def test_the_limiter_counts_verdicts_and_never_fails_open() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitPolicy(default=TEN_PER_SECOND), LocalBuckets(clock=clock))
    for _ in range(2):
        await limiter.take(key("a"), TEN_PER_SECOND)
    await limiter.take(key("a"), TEN_PER_SECOND, max_wait=0.5)
    await limiter.take(key("a"), TEN_PER_SECOND)
    assert limiter.counts == {"allowed": 2, "waited": 1, "rejected": 1}
    assert (limiter.backend, limiter.fail_open_total, limiter.enabled) == ("local", 0, True)
