"""Buckets in a real Redis: the Lua script's arithmetic is the pure math's, takes are
atomic under concurrency, and a Redis that goes away lets traffic through."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from credentials.redis_client import CircuitBreaker, open_redis
from ratelimit.bucket import BucketState, Limit, take
from ratelimit.keys import BucketKey, redis_key
from ratelimit.limiter import RateLimiter
from ratelimit.policy import RateLimitPolicy
from ratelimit.redis_bucket import RedisBuckets
from tests.credentials.private_redis import PrivateRedis, SilentServer

REDIS_URL = "redis://127.0.0.1:6379/0"
SECOND = 1_000_000
HOUR = 3600 * SECOND


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client() -> AsyncIterator[redis.Redis]:
    connection = open_redis(REDIS_URL)
    yield connection
    await connection.aclose()


@pytest.fixture
async def buckets(client: redis.Redis) -> AsyncIterator[RedisBuckets]:
    prefix = f"rltest-{uuid.uuid4().hex[:12]}"
    yield RedisBuckets(client, prefix=prefix, breaker=CircuitBreaker())
    async for name in client.scan_iter(f"{prefix}:*"):
        await client.delete(name)


def key(connection: str = "conn-1", integration: str = "github") -> BucketKey:
    return BucketKey(1, integration, connection)


async def test_a_full_bucket_allows_exactly_the_burst(buckets: RedisBuckets) -> None:
    limit = Limit(1, HOUR, 3)
    verdicts = [await buckets.take(key(), limit) for _ in range(4)]
    assert [(v.allowed, v.remaining) for v in verdicts] == [
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    refused = verdicts[-1]
    # An hour per token, less the moments that passed since the first take.
    assert 3599 < refused.wait_seconds <= 3600
    assert 3 * 3600 - 1 < refused.reset_seconds <= 3 * 3600
    assert not any(v.degraded for v in verdicts)


async def test_many_concurrent_takes_allow_exactly_the_burst(buckets: RedisBuckets) -> None:
    limit = Limit(1, HOUR, 25)
    verdicts = await asyncio.gather(*(buckets.take(key(), limit) for _ in range(200)))
    assert sum(v.allowed for v in verdicts) == 25
    assert sorted(v.remaining for v in verdicts if v.allowed) == list(range(25))


async def test_state_is_one_hash_per_connection_with_a_ttl(
    buckets: RedisBuckets, client: redis.Redis
) -> None:
    limit = Limit(10, SECOND, 5)
    verdict = await buckets.take(key(), limit)
    name = buckets.key(key())
    stored = await client.hgetall(name)
    assert set(stored) == {b"l", b"t", b"u"}
    assert int(stored[b"l"]) == 4 * limit.unit
    assert int(stored[b"u"]) == limit.unit
    # The TTL is the time until full again (100 ms here), plus a millisecond.
    assert 0 < await client.pttl(name) <= round(verdict.reset_seconds * 1000) + 1


async def test_keys_escape_ids_so_connections_never_share_a_bucket(
    buckets: RedisBuckets,
) -> None:
    left, right = BucketKey(1, "a:b", "c"), BucketKey(1, "a", "b:c")
    assert buckets.key(left) != buckets.key(right)
    assert redis_key("p", BucketKey(7, "a:b", "c%d/é")) == "p:rl:7:a%3Ab:c%25d%2F%C3%A9"
    limit = Limit(1, HOUR, 1)
    assert (await buckets.take(left, limit)).allowed
    assert not (await buckets.take(left, limit)).allowed
    assert (await buckets.take(right, limit)).allowed


async def test_the_script_computes_what_the_pure_math_computes(
    buckets: RedisBuckets, client: redis.Redis
) -> None:
    # Reserving waits keeps every take allowed, so each one writes the Redis time it
    # used (`t`); replaying those times through the pure function must give the same
    # verdicts, to the microsecond.
    limit = Limit(7, 3 * SECOND, 3)
    name = buckets.key(key())
    state: BucketState | None = None
    for _ in range(12):
        verdict = await buckets.take(key(), limit, max_wait=60.0)
        redis_now = int(await client.hget(name, "t") or 0)
        state, expected = take(limit, state, redis_now, max_wait_us=60 * SECOND)
        assert verdict == expected
        assert state is not None
        assert int(await client.hget(name, "l") or 0) == state.level


async def test_a_changed_limit_carries_the_level_over(buckets: RedisBuckets) -> None:
    per_second = Limit(10, SECOND, 10)
    for _ in range(10):
        await buckets.take(key(), per_second)
    # Same rate counted in other units (600/m): the bucket is still empty.
    per_minute = Limit(600, 60 * SECOND, 10)
    assert per_minute.unit == per_second.unit
    half_per_second = Limit(5, SECOND, 10)
    assert half_per_second.unit != per_second.unit
    refused = await buckets.take(key(), half_per_second)
    assert not refused.allowed
    assert 0 < refused.wait_seconds <= 0.2


async def test_waits_are_reserved_in_order(buckets: RedisBuckets) -> None:
    limit = Limit(1, HOUR, 1)
    assert (await buckets.take(key(), limit)).allowed
    reserved = await buckets.take(key(), limit, max_wait=7200.0)
    assert reserved.allowed
    assert 3599 < reserved.wait_seconds <= 3600
    queued = await buckets.take(key(), limit, max_wait=7200.0)
    assert 7199 < queued.wait_seconds <= 7200
    assert not (await buckets.take(key(), limit, max_wait=7200.0)).allowed


# --- Redis goes away -------------------------------------------------------------------


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    await server.stop()


async def test_a_stopped_redis_fails_open_counts_and_warns_once_per_cooldown(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(first_cooldown=1.0, max_cooldown=1.0, clock=clock)
    reported: list[str] = []
    client = open_redis(private_redis.url, timeout=0.5)
    buckets = RedisBuckets(
        client, prefix="rl", breaker=breaker, on_fail_open=reported.append, clock=clock
    )
    limiter = RateLimiter(RateLimitPolicy(), buckets)
    limit = Limit(1, HOUR, 1)
    try:
        assert (await limiter.take(key(), limit)).allowed
        assert not (await limiter.take(key(), limit)).allowed
        await private_redis.stop()
        caplog.set_level(logging.WARNING, logger="authgate.ratelimit")

        failed = await limiter.take(key(), limit)
        assert (failed.allowed, failed.degraded) == (True, True)
        skipped = [await limiter.take(key(), limit) for _ in range(5)]
        assert all(v.allowed and v.degraded for v in skipped)
        assert limiter.fail_open_total == 6
        assert buckets.fail_open_counts == {"redis_error": 1, "redis_skipped": 5}
        assert reported == ["redis_error"] + ["redis_skipped"] * 5
        assert limiter.counts["fail_open"] == 6
        warnings = [r for r in caplog.records if r.name == "authgate.ratelimit"]
        assert len(warnings) == 1

        clock.now += 1.0  # the cool-down ends: one probe, which fails again
        assert (await limiter.take(key(), limit)).degraded
        assert len([r for r in caplog.records if r.name == "authgate.ratelimit"]) == 2

        await private_redis.start()  # same port, empty: the next probe finds it
        clock.now += 1.0
        back = await limiter.take(key(), limit)
        assert (back.allowed, back.degraded) == (True, False)
        assert not (await limiter.take(key(), limit)).allowed
        assert limiter.fail_open_total == 7
    finally:
        await client.aclose()


async def test_a_hanging_redis_fails_open_within_the_client_timeout() -> None:
    server = SilentServer()
    await server.start()
    client = open_redis(server.url, connect_timeout=0.2, timeout=0.2)
    buckets = RedisBuckets(client, prefix="rl", breaker=CircuitBreaker())
    try:
        verdict = await asyncio.wait_for(buckets.take(key(), Limit(1, HOUR, 1)), 5.0)
        assert (verdict.allowed, verdict.degraded) == (True, True)
        assert buckets.fail_open_total == 1
        # The breaker is open now: the next take does not even connect.
        connections = server.connections
        assert (await buckets.take(key(), Limit(1, HOUR, 1))).degraded
        assert server.connections == connections
    finally:
        await client.aclose()
        await server.stop()


async def test_takes_queued_behind_a_hanging_redis_do_not_each_wait_for_it() -> None:
    server = SilentServer()
    await server.start()
    client = open_redis(server.url, connect_timeout=0.2, timeout=0.2)
    buckets = RedisBuckets(client, prefix="rl", breaker=CircuitBreaker(), max_in_flight=2)
    try:
        takes = (buckets.take(key(f"c{index}"), Limit(1, HOUR, 1)) for index in range(40))
        verdicts = await asyncio.wait_for(asyncio.gather(*takes), 5.0)
        assert all(v.allowed and v.degraded for v in verdicts)
        # Only the first two ever reached the server; the rest saw the open breaker.
        assert server.connections <= 2
        assert buckets.fail_open_counts == {"redis_error": 2, "redis_skipped": 38}
    finally:
        await client.aclose()
        await server.stop()
