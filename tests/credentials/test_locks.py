"""Cross-process refresh locks on a real Redis and on real SQLite/PostgreSQL stores.

Each lock object gets its own Redis client (or its own database connection), standing
in for one process. Tests that need Redis to die run their own redis-server.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from credentials.database import Database, open_database
from credentials.locks import (
    Lease,
    LockBackendDown,
    RedisLock,
    RefreshLocks,
    StoreLease,
)
from credentials.migrations import migrate
from credentials.redis_client import CircuitBreaker, open_redis
from tests.credentials.conftest import FakeClock
from tests.credentials.private_redis import PrivateRedis, SilentServer
from tests.support import DatabaseFactory, database_urls, postgres_database

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
NAME = "refresh:42"
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.02


class FakeTime:
    """Monotonic seconds for a breaker, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], Awaitable[bool] | bool]) -> None:
    """Polls `condition` until it holds; fails the test after WAIT_SECONDS."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(POLL_SECONDS)


async def keep_contending(lock: RedisLock | StoreLease, name: str, *, seconds: float) -> int:
    """Tries to take `name` for `seconds`; every attempt must fail. Returns the count."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    attempts = 0
    while loop.time() < until:
        taken = await lock.try_acquire(name)
        if taken is not None:
            await taken.release()
            raise AssertionError(f"contender took the lock after {attempts} attempts")
        attempts += 1
        await asyncio.sleep(POLL_SECONDS)
    return attempts


def renewal_tasks(name: str) -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == f"lock-renewal:{name}"]


# --- Redis fixtures ----------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"authgate-test:{uuid.uuid4().hex}"


@pytest.fixture
async def raw_redis(prefix: str) -> AsyncIterator[redis.Redis]:
    client = open_redis(SHARED_REDIS_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], redis.Redis]]:
    opened: list[redis.Redis] = []

    def open_client(url: str) -> redis.Redis:
        client = open_redis(url)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.aclose()


@pytest.fixture
def redis_lock(clients: Callable[[str], redis.Redis], prefix: str) -> Callable[..., RedisLock]:
    """A RedisLock on the shared Redis with a client of its own: one "process"."""

    def make(**options: Any) -> RedisLock:
        return RedisLock(clients(SHARED_REDIS_URL), prefix=prefix, **options)

    return make


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    await server.start()
    yield server
    await server.stop()


# --- store fixtures ----------------------------------------------------------------------


def _backend(factory: DatabaseFactory) -> Any:
    marks = [pytest.mark.postgres] if factory is postgres_database else []
    return pytest.param(factory, id=factory.__name__, marks=marks)


@pytest.fixture(params=[_backend(factory) for factory in database_urls()])
async def lease_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with request.param(tmp_path) as url:
        db = await open_database(url)
        try:
            await migrate(db)
        finally:
            await db.close()
        yield url


@pytest.fixture
async def databases(
    lease_database_url: str,
) -> AsyncIterator[Callable[[], Awaitable[Database]]]:
    """Opens connections to one store; each stands in for another process."""
    opened: list[Database] = []

    async def open_one() -> Database:
        db = await open_database(lease_database_url)
        opened.append(db)
        return db

    yield open_one
    for db in opened:
        await db.close()


# --- RedisLock ---------------------------------------------------------------------------


async def test_only_one_process_holds_a_redis_lock(
    redis_lock: Callable[..., RedisLock], raw_redis: redis.Redis, prefix: str
) -> None:
    first, second = redis_lock(), redis_lock()
    held = await first.try_acquire(NAME)
    assert held is not None
    try:
        assert await raw_redis.exists(f"{prefix}:lock:{NAME}") == 1
        assert await second.try_acquire(NAME) is None
        assert await second.holder_exists(NAME)
        other = await second.try_acquire("refresh:43")
        assert other is not None
        await other.release()
    finally:
        await held.release()
    assert not await second.holder_exists(NAME)
    taken = await second.try_acquire(NAME)
    assert taken is not None
    await taken.release()


async def test_a_redis_lease_expires_after_its_ttl(
    redis_lock: Callable[..., RedisLock], raw_redis: redis.Redis, prefix: str
) -> None:
    async with await _acquired(redis_lock(ttl=7.0)) as held:
        assert 0 < await raw_redis.pttl(f"{prefix}:lock:{NAME}") <= 7000
        assert not held.lost


async def test_release_deletes_only_the_owners_lease(
    redis_lock: Callable[..., RedisLock], raw_redis: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:lock:{NAME}"
    first, second, third = redis_lock(), redis_lock(), redis_lock()
    stale = await _acquired(first)
    # The first holder's lease runs out while it still works.
    await raw_redis.pexpire(key, 1)
    await eventually(lambda: _missing(raw_redis, key))
    current = await _acquired(second)
    try:
        await stale.release()
        assert await raw_redis.exists(key) == 1
        assert await third.try_acquire(NAME) is None
    finally:
        await current.release()
    assert await raw_redis.exists(key) == 0


async def test_renewal_keeps_a_redis_lock_beyond_its_ttl(
    redis_lock: Callable[..., RedisLock], raw_redis: redis.Redis, prefix: str
) -> None:
    holder = redis_lock(ttl=0.3, renew_every=0.1)
    contender = redis_lock(ttl=0.3)
    held = await _acquired(holder)
    try:
        assert await raw_redis.pttl(f"{prefix}:lock:{NAME}") <= 300
        attempts = await keep_contending(contender, NAME, seconds=1.0)
        assert attempts > 3
        assert not held.lost
    finally:
        await held.release()
    taken = await contender.try_acquire(NAME)
    assert taken is not None
    await taken.release()


async def test_a_deleted_redis_lease_is_lost(
    redis_lock: Callable[..., RedisLock], raw_redis: redis.Redis, prefix: str
) -> None:
    # ttl far beyond the wait: only the renewal can notice, not the local expiry estimate.
    held = await _acquired(redis_lock(ttl=60.0, renew_every=0.05))
    await raw_redis.delete(f"{prefix}:lock:{NAME}")
    await eventually(lambda: held.lost)
    await held.release()


async def test_a_stolen_redis_lease_is_lost_and_left_alone(
    redis_lock: Callable[..., RedisLock], raw_redis: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:lock:{NAME}"
    held = await _acquired(redis_lock(ttl=60.0, renew_every=0.05))
    await raw_redis.set(key, "another-owner", px=60_000)
    await eventually(lambda: held.lost)
    await held.release()
    assert await raw_redis.get(key) == b"another-owner"
    # The renewal that found another owner did not extend that owner's lease either.
    assert await raw_redis.pttl(key) <= 60_000


async def test_release_stops_the_renewal_and_is_idempotent(
    redis_lock: Callable[..., RedisLock],
) -> None:
    lock = redis_lock(ttl=5.0, renew_every=0.05)
    held = await _acquired(lock)
    assert len(renewal_tasks(NAME)) == 1
    await held.release()
    assert renewal_tasks(NAME) == []
    await held.release()
    assert not await lock.holder_exists(NAME)


async def test_a_redis_lease_is_lost_when_redis_dies(
    private_redis: PrivateRedis, clients: Callable[[str], redis.Redis], prefix: str
) -> None:
    lock = RedisLock(clients(private_redis.url), prefix=prefix, ttl=60.0, renew_every=0.05)
    held = await _acquired(lock)
    await private_redis.stop()
    await eventually(lambda: held.lost)
    await held.release()  # Redis is down: logged, not raised
    assert renewal_tasks(NAME) == []


async def test_an_unreachable_redis_raises_backend_down(
    private_redis: PrivateRedis, clients: Callable[[str], redis.Redis], prefix: str
) -> None:
    lock = RedisLock(clients(private_redis.url), prefix=prefix)
    await private_redis.stop()
    with pytest.raises(LockBackendDown):
        await lock.try_acquire(NAME)
    # The breaker is open now: the next calls do not even try.
    with pytest.raises(LockBackendDown, match="cool-down"):
        await lock.holder_exists(NAME)


def test_lease_timings_are_validated(clients: Callable[[str], redis.Redis]) -> None:
    client = clients(SHARED_REDIS_URL)
    with pytest.raises(ValueError, match="ttl"):
        RedisLock(client, prefix="p", ttl=0)
    with pytest.raises(ValueError, match="renew_every"):
        RedisLock(client, prefix="p", ttl=1.0, renew_every=1.0)


# --- StoreLease --------------------------------------------------------------------------


async def test_only_one_process_holds_a_store_lease(
    databases: Callable[[], Awaitable[Database]],
) -> None:
    first, second = StoreLease(await databases()), StoreLease(await databases())
    held = await first.try_acquire(NAME)
    assert held is not None
    try:
        assert await second.try_acquire(NAME) is None
        assert await second.holder_exists(NAME)
        other = await second.try_acquire("refresh:43")
        assert other is not None
        await other.release()
    finally:
        await held.release()
    assert not await second.holder_exists(NAME)
    taken = await second.try_acquire(NAME)
    assert taken is not None
    await taken.release()


async def test_concurrent_store_acquires_have_one_winner(
    databases: Callable[[], Awaitable[Database]],
) -> None:
    leases = [StoreLease(await databases()) for _ in range(2)]
    outcomes = await asyncio.gather(*(lease.try_acquire(NAME) for lease in leases * 5))
    winners = [held for held in outcomes if held is not None]
    assert len(winners) == 1
    await winners[0].release()


async def test_an_expired_store_lease_is_taken_over(
    databases: Callable[[], Awaitable[Database]], clock: FakeClock
) -> None:
    first = StoreLease(await databases(), ttl=10.0, clock=clock)
    second = StoreLease(await databases(), ttl=10.0, clock=clock)
    third = StoreLease(await databases(), ttl=10.0, clock=clock)
    stale = await _acquired(first)
    clock.advance(9_999)
    assert await second.try_acquire(NAME) is None
    assert not stale.lost
    clock.advance(1)
    assert stale.lost
    assert not await second.holder_exists(NAME)
    current = await _acquired(second)
    try:
        await stale.release()
        assert await third.holder_exists(NAME)
        assert await third.try_acquire(NAME) is None
    finally:
        await current.release()
    assert not await third.holder_exists(NAME)


async def test_renewal_keeps_a_store_lease_beyond_its_ttl(
    databases: Callable[[], Awaitable[Database]],
) -> None:
    holder = StoreLease(await databases(), ttl=0.3, renew_every=0.1)
    contender = StoreLease(await databases(), ttl=0.3)
    held = await _acquired(holder)
    try:
        attempts = await keep_contending(contender, NAME, seconds=1.0)
        assert attempts > 3
        assert not held.lost
    finally:
        await held.release()
    taken = await contender.try_acquire(NAME)
    assert taken is not None
    await taken.release()


async def test_a_store_lease_taken_by_another_holder_is_lost_and_left_alone(
    databases: Callable[[], Awaitable[Database]],
) -> None:
    db = await databases()
    held = await _acquired(StoreLease(db, ttl=60.0, renew_every=0.05))
    await db.execute("UPDATE refresh_leases SET holder = 'intruder' WHERE name = $1", NAME)
    await eventually(lambda: held.lost)
    await held.release()
    assert await db.fetchval("SELECT holder FROM refresh_leases WHERE name = $1", NAME) == (
        "intruder"
    )
    assert renewal_tasks(NAME) == []


async def test_store_errors_while_acquiring_propagate(tmp_path: Path) -> None:
    # No migrations: the table is missing, which is a broken store, not a held lock.
    db = await open_database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        locks = RefreshLocks(None, StoreLease(db))
        with pytest.raises(sqlite3.OperationalError, match="refresh_leases"):
            await locks.try_acquire(NAME)
    finally:
        await db.close()


@pytest.mark.postgres
async def test_store_errors_while_acquiring_propagate_on_postgres(tmp_path: Path) -> None:
    async with postgres_database(tmp_path) as url:
        db = await open_database(url)
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await StoreLease(db).try_acquire(NAME)
        finally:
            await db.close()


# --- RefreshLocks ------------------------------------------------------------------------


async def test_without_redis_the_store_lease_is_the_lock(
    databases: Callable[[], Awaitable[Database]],
) -> None:
    first = RefreshLocks(None, StoreLease(await databases()))
    second = RefreshLocks(None, StoreLease(await databases()))
    assert first.using_fallback
    async with await _acquired(first):
        assert await second.try_acquire(NAME) is None
        assert await second.holder_exists(NAME)


async def test_refresh_locks_take_redis_then_the_store_lease_behind_it(
    databases: Callable[[], Awaitable[Database]],
    redis_lock: Callable[..., RedisLock],
    raw_redis: redis.Redis,
    prefix: str,
) -> None:
    db = await databases()
    locks = RefreshLocks(redis_lock(), StoreLease(db))
    async with await _acquired(locks):
        assert not locks.using_fallback
        assert await raw_redis.exists(f"{prefix}:lock:{NAME}") == 1
        assert await db.fetchval("SELECT count(*) FROM refresh_leases") == 1
    assert await raw_redis.exists(f"{prefix}:lock:{NAME}") == 0
    assert await db.fetchval("SELECT count(*) FROM refresh_leases") == 0


async def test_refresh_locks_fall_back_to_the_store_and_return_to_redis(
    databases: Callable[[], Awaitable[Database]],
    private_redis: PrivateRedis,
    clients: Callable[[str], redis.Redis],
    prefix: str,
) -> None:
    time = FakeTime()

    async def process() -> RefreshLocks:
        lock = RedisLock(
            clients(private_redis.url), prefix=prefix, breaker=CircuitBreaker(clock=time)
        )
        return RefreshLocks(lock, StoreLease(await databases()))

    process_a, process_b, process_c = await process(), await process(), await process()
    held_a = await _acquired(process_a)
    assert not process_a.using_fallback
    assert await process_b.try_acquire(NAME) is None

    await private_redis.stop()
    # Redis died while A holds its lease: B falls back, and A's store lease keeps it out.
    assert await process_b.try_acquire(NAME) is None
    assert process_b.using_fallback
    assert not held_a.lost
    assert await process_b.holder_exists(NAME)
    await held_a.release()  # the store lease goes; the Redis one cannot: logged, not raised
    held_b = await _acquired(process_b)
    assert await process_c.try_acquire(NAME) is None
    assert process_c.using_fallback
    assert await process_c.holder_exists(NAME)
    await held_b.release()
    assert not await process_c.holder_exists(NAME)

    await private_redis.start()
    # Still within the cool-down: C keeps using the store without trying Redis.
    assert not await process_c.holder_exists(NAME)
    assert process_c.using_fallback
    time.now += 1.0
    held_c = await _acquired(process_c)
    try:
        assert not process_c.using_fallback
        assert await clients(private_redis.url).exists(f"{prefix}:lock:{NAME}") == 1
        assert await process_a.try_acquire(NAME) is None
        assert not process_a.using_fallback
    finally:
        await held_c.release()


async def test_a_hanging_redis_costs_one_attempt_per_cooldown(
    databases: Callable[[], Awaitable[Database]], silent_server: SilentServer, prefix: str
) -> None:
    time = FakeTime()
    client = open_redis(silent_server.url, connect_timeout=0.1, timeout=0.1)
    lock = RedisLock(client, prefix=prefix, breaker=CircuitBreaker(clock=time))
    locks = RefreshLocks(lock, StoreLease(await databases()))

    async def serve_requests() -> None:
        for _ in range(5):
            assert not await locks.holder_exists(NAME)
            async with await _acquired(locks):
                assert locks.using_fallback

    try:
        await serve_requests()
        assert silent_server.connections == 1
        time.now += 1.0  # first cool-down over: one probe, which fails again
        await serve_requests()
        assert silent_server.connections == 2
        time.now += 1.0  # the cool-down doubled to 2 s
        await serve_requests()
        assert silent_server.connections == 2
        time.now += 1.0
        await serve_requests()
        assert silent_server.connections == 3
    finally:
        await client.aclose()


# --- helpers -----------------------------------------------------------------------------


async def _acquired(lock: RedisLock | StoreLease | RefreshLocks) -> Lease:
    held = await lock.try_acquire(NAME)
    assert held is not None
    return held


async def _missing(client: redis.Redis, key: str) -> bool:
    return await client.exists(key) == 0
