"""A warm proxied request touches neither the store nor Redis.

The store (PostgreSQL) and Redis are each reached through a TCP relay that counts the
bytes authgate sends them. After one request has warmed the caches, many more requests
must not send them a single byte: no query, no command, not even a ping. The activity
log is off here (it writes in the background, in batches; tests/e2e/test_activity_log.py
covers it).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Authgate, Factory, ok_handler
from tests.support import POSTGRES_ADMIN_URL, postgres_database
from tests.tcp_relay import TcpRelay

WARM_REQUESTS = 200


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[tuple[TcpRelay, TcpRelay, str]]:
    async with (
        postgres_database(tmp_path) as database_url,
        TcpRelay("127.0.0.1", 5432) as store,
        TcpRelay("127.0.0.1", 6379) as redis,
    ):
        relayed = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{store.port}")
        assert database_url.startswith(POSTGRES_ADMIN_URL)
        assert relayed != database_url
        yield store, redis, relayed


# The store is the relayed PostgreSQL schema below, whatever `database_url` would give.
@pytest.mark.parametrize("database_url", ["relayed"])
async def test_warm_requests_send_nothing_to_the_store_or_redis(
    make_authgate: Factory, relays: tuple[TcpRelay, TcpRelay, str]
) -> None:
    store, redis, database_url = relays
    gate = await make_authgate(
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
        AUTHGATE_REDIS_PREFIX=f"hot-{uuid.uuid4().hex[:8]}",
        AUTHGATE_ACTIVITY_LOG="false",
    )
    await gate.integration("keyed", "fake-api-key")
    await gate.connection("keyed", "conn-1", {"type": "API_KEY", "apiKey": "ak-hot-path"})
    gate.provider.respond("/api/items", ok_handler(body=b'{"items":[]}'))
    await _call(gate)  # fills the caches: this one may read the store and Redis
    before = (store.bytes_to_target, redis.bytes_to_target)
    assert before[0] > 0, "the relay must carry the store traffic"
    assert before[1] > 0, "the relay must carry the Redis traffic"

    for _ in range(WARM_REQUESTS):
        await _call(gate)

    assert (store.bytes_to_target, redis.bytes_to_target) == before
    assert len(gate.provider.received) == WARM_REQUESTS + 1


async def _call(gate: Authgate) -> None:
    response = await gate.proxy("GET", "/proxy/items", provider_config_key="keyed")
    assert response.status == 200, await response.text()
    assert await response.read() == b'{"items":[]}'
