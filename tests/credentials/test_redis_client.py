"""The fail-fast Redis client and the circuit breaker in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from credentials.redis_client import CircuitBreaker, open_redis
from tests.credentials.private_redis import SilentServer

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
# Far below redis-py's own 5 s default: a client without our timeouts trips this guard.
GUARD_SECONDS = 2.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def breaker(fake_time: FakeTime) -> CircuitBreaker:
    return CircuitBreaker(first_cooldown=1.0, max_cooldown=5.0, clock=fake_time)


def test_a_closed_breaker_lets_every_call_through(breaker: CircuitBreaker) -> None:
    assert [breaker.allow() for _ in range(3)] == [True, True, True]
    assert not breaker.is_open


def test_a_failure_skips_calls_for_the_cooldown(
    breaker: CircuitBreaker, fake_time: FakeTime
) -> None:
    breaker.record_failure()
    assert breaker.is_open
    assert not breaker.allow()
    fake_time.now += 0.999
    assert not breaker.allow()
    fake_time.now += 0.001
    assert breaker.allow()


def test_only_one_probe_goes_through_after_the_cooldown(
    breaker: CircuitBreaker, fake_time: FakeTime
) -> None:
    breaker.record_failure()
    fake_time.now += 1.0
    assert [breaker.allow() for _ in range(4)] == [True, False, False, False]


def test_failed_probes_double_the_cooldown_up_to_the_cap(
    breaker: CircuitBreaker, fake_time: FakeTime
) -> None:
    breaker.record_failure()
    waits = []
    for _ in range(5):
        fake_time.now += breaker.cooldown
        assert breaker.allow()
        breaker.record_failure()
        waits.append(breaker.cooldown)
    assert waits == [2.0, 4.0, 5.0, 5.0, 5.0]
    fake_time.now += 4.999
    assert not breaker.allow()
    fake_time.now += 0.001
    assert breaker.allow()


def test_a_success_closes_the_breaker_and_resets_the_cooldown(
    breaker: CircuitBreaker, fake_time: FakeTime
) -> None:
    breaker.record_failure()
    fake_time.now += 1.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.cooldown == 2.0
    breaker.record_success()
    assert not breaker.is_open
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.cooldown == 1.0
    fake_time.now += 1.0
    assert breaker.allow()


def test_late_failures_of_the_same_outage_do_not_lengthen_it(
    breaker: CircuitBreaker, fake_time: FakeTime
) -> None:
    breaker.record_failure()
    # Calls that started before the breaker opened fail afterwards.
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.cooldown == 1.0
    fake_time.now += 1.0
    assert breaker.allow()


def test_a_probe_that_never_reports_does_not_lock_redis_out(
    breaker: CircuitBreaker, fake_time: FakeTime
) -> None:
    breaker.record_failure()
    fake_time.now += 1.0
    assert breaker.allow()  # its caller is cancelled and never reports
    assert not breaker.allow()
    fake_time.now += 1.0
    assert breaker.allow()


def test_invalid_cooldowns_are_refused() -> None:
    with pytest.raises(ValueError, match="cooldown"):
        CircuitBreaker(first_cooldown=0)
    with pytest.raises(ValueError, match="cooldown"):
        CircuitBreaker(first_cooldown=2, max_cooldown=1)


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    await server.start()
    yield server
    await server.stop()


async def test_the_client_talks_to_a_live_redis() -> None:
    client = open_redis(SHARED_REDIS_URL)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_hanging_redis_times_out_once_without_retries(
    silent_server: SilentServer,
) -> None:
    client = open_redis(silent_server.url, connect_timeout=0.1, timeout=0.1)
    try:
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(client.ping(), timeout=GUARD_SECONDS)
    finally:
        await client.aclose()
    assert silent_server.connections == 1
