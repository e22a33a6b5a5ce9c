"""Two authgate processes on one Redis: a cold process is served by the shared tier."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from credentials.connection_cache import ConnectionCache, ConnectionKey
from credentials.redis_client import open_redis
from credentials.store import ChangeEvent
from tests.e2e.conftest import Authgate, Factory

REDIS_URL = "redis://127.0.0.1:6379/0"
TOKEN_1 = "e2e-plain-token-1"  # a value that must never reach Redis in the clear
TOKEN_2 = "e2e-plain-token-2"


@pytest.fixture
def prefix() -> str:
    return f"authgate-test-{uuid.uuid4().hex}"


@pytest.fixture
async def raw_redis(prefix: str) -> AsyncIterator[redis.Redis]:
    client = open_redis(REDIS_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class ConnectionEvents:
    """Counts the connection change events a process received, and waits for more."""

    def __init__(self) -> None:
        self.count = 0
        self._arrived = asyncio.Event()

    def on_change(self, event: ChangeEvent) -> None:
        if event.kind == "connection":
            self.count += 1
            self._arrived.set()

    def reset(self) -> None:
        return None

    async def reach(self, count: int) -> None:
        while self.count < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout=10)


def cache_of(instance: Authgate) -> ConnectionCache:
    cache = instance.core.connection_cache
    assert cache is not None, "REDIS_URL is set, so the shared tier must be wired"
    return cache


async def _pair(
    make_authgate: Factory, prefix: str
) -> tuple[Authgate, Authgate, ConnectionKey, ConnectionEvents]:
    """Two processes, and a connection written through the first (seen by the second)."""
    first = await make_authgate(REDIS_URL=REDIS_URL, AUTHGATE_REDIS_PREFIX=prefix)
    second = await make_authgate(share=first)
    for instance in (first, second):
        bridge = instance.core.bridge
        assert bridge is not None
        await asyncio.wait_for(bridge.subscribed.wait(), timeout=10)
    events = ConnectionEvents()
    second.core.changes.subscribe(events.on_change, reset=events.reset)
    await first.integration("oauth", "fake-oauth")
    await first.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": TOKEN_1})
    await events.reach(1)
    # The writes' tombstones are on their way; until they land the writer skips the tier.
    await cache_of(first).drain()
    environment = await first.core.store.get_environment("dev")
    assert environment is not None
    return first, second, (environment.id, "oauth", "conn-1"), events


async def test_a_cold_process_serves_its_first_request_from_redis(
    make_authgate: Factory, prefix: str, raw_redis: redis.Redis
) -> None:
    first, second, key, _ = await _pair(make_authgate, prefix)
    assert (await first.proxy("GET", "/proxy/warm")).status == 200
    assert cache_of(first).stats.fills == 1

    response = await second.proxy("GET", "/proxy/cold")

    assert response.status == 200
    assert first.provider.last().header("Authorization") == f"Bearer {TOKEN_1}"
    stats = cache_of(second).stats
    assert (stats.hits, stats.store_reads) == (1, 0)
    raw = await raw_redis.get(cache_of(second).value_key(key))
    assert raw is not None
    assert TOKEN_1.encode() not in raw
    assert b"ag1." in raw


async def test_a_token_written_in_one_process_is_not_served_stale_from_redis(
    make_authgate: Factory, prefix: str, raw_redis: redis.Redis
) -> None:
    first, second, _, events = await _pair(make_authgate, prefix)
    assert (await second.proxy("GET", "/proxy/a")).status == 200  # fills Redis from the second
    assert cache_of(second).stats.fills == 1

    await first.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": TOKEN_2})
    await events.reach(2)
    # The event reached the second process only after the first wrote the tombstone, so
    # its next request misses in process and in Redis, and reads the new token.
    assert (await second.proxy("GET", "/proxy/b")).status == 200

    assert first.provider.last().header("Authorization") == f"Bearer {TOKEN_2}"
    stats = cache_of(second).stats
    assert (stats.hits, stats.store_reads) == (0, 2)
