"""The refresh coordinator on real parts: store (SQLite and PostgreSQL), Redis, sockets.

A fake token endpoint rotates refresh tokens and rejects any reuse, so a duplicate
refresh is not just wasteful but visible. "Two processes" are two independent stacks
(store handle, locks, waiters, refresher) over the same database and Redis.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from credentials.change_waiters import ChangeWaiters
from credentials.crypto import Keyring
from credentials.expiry import iso_expiry, stored_expiry
from credentials.grants import TokenHttp
from credentials.locks import RedisLock, RefreshLocks, StoreLease
from credentials.models import Connection, Integration, Provider
from credentials.providers import parse_catalogue
from credentials.redis_client import open_redis
from credentials.refresh import (
    NeedsReauthorization,
    RefreshBackoff,
    Refresher,
    RefreshFailed,
    RefreshSettings,
)
from credentials.store import SqlStore, open_store

REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
CATALOGUE = """
fake-oauth:
    display_name: Fake OAuth
    docs: https://docs.example.com/fake
    auth_mode: OAUTH2
    token_url: http://127.0.0.1:${connectionConfig.port}/token
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
"""


@dataclass
class TokenEndpoint:
    """Rotates on every refresh; an old refresh token is a reuse and gets invalid_grant."""

    current: dict[str, str] = field(default_factory=dict)  # refresh token -> connection
    issued: int = 0
    reused: int = 0
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    hold: asyncio.Event | None = None  # the next call waits for it; later calls do not
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    retired: set[str] = field(default_factory=set)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        hold, self.hold = self.hold, None
        self.entered.set()
        if hold is not None:
            await hold.wait()
        if self.failures:
            status, body = self.failures.pop(0)
            return web.json_response(body, status=status)
        assert form.get("grant_type") == "refresh_token"
        assert form.get("client_id") == "cid"
        assert form.get("client_secret") == "csecret"
        presented = str(form.get("refresh_token"))
        owner = self.current.pop(presented, None)
        if owner is None:
            self.reused += presented in self.retired
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.retired.add(presented)
        self.issued += 1
        rotated = f"rt-{owner}-{self.issued}"
        self.current[rotated] = owner
        return web.json_response(
            {
                "access_token": f"at-{owner}-{self.issued}",
                "refresh_token": rotated,
                "expires_in": 3600,
            }
        )


@dataclass
class Stack:
    """What one authgate process holds."""

    store: SqlStore
    refresher: Refresher
    http: TokenHttp
    client: redis.Redis | None

    async def close(self) -> None:
        await self.http.close()
        if self.client is not None:
            await self.client.aclose()
        await self.store.close()


@dataclass
class World:
    endpoint: TokenEndpoint
    provider: Provider
    integration: Integration
    port: int
    make_stack: Callable[..., Awaitable[Stack]]
    first: Stack
    elsewhere: SqlStore  # a lease store no other stack uses: its leases exclude nobody

    async def connection(
        self, name: str, *, expires_in: float = -60.0, store: SqlStore | None = None
    ) -> Connection:
        self.endpoint.current[f"rt-{name}-0"] = name
        credentials = {
            "type": "OAUTH2",
            "access_token": f"at-{name}-0",
            "refresh_token": f"rt-{name}-0",
            "expires_at": iso_expiry(time.time() + expires_in),
        }
        return await (store or self.first.store).upsert_connection(
            self.integration.environment_id,
            self.integration,
            connection_id=name,
            credentials=credentials,
            connection_config={"port": str(self.port)},
        )

    async def obtained_long_ago(self, connection: Connection) -> Connection:
        """The connection as if its token had been issued an hour ago (a full lifetime)."""
        store = self.first.store
        an_hour_ago = int((time.time() - 3600) * 1000)
        await store.db.execute(
            "UPDATE connections SET updated_at = $1 WHERE id = $2", an_hour_ago, connection.id
        )
        aged = await store.get_connection(
            connection.environment_id, connection.provider_config_key, connection.connection_id
        )
        assert aged is not None
        return aged

    async def fresh(self, stack: Stack, connection: Connection, **flags: bool) -> Connection:
        return await stack.refresher.fresh(connection, self.integration, self.provider, **flags)


SETTINGS = RefreshSettings(poll_interval=0.02, rotation_grace=0.5, backoff_first=30.0)


@pytest.fixture
async def world(database_url: str, keyring: Keyring, tmp_path: Path) -> AsyncIterator[World]:
    endpoint = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/token", endpoint.token)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    prefix = f"authgate-test-{secrets.token_hex(4)}"
    stacks: list[Stack] = []
    elsewhere = await open_store(f"sqlite:///{tmp_path / 'other-leases.db'}", keyring)

    async def make_stack(
        redis_url: str | None = REDIS_URL, *, lease_store: SqlStore | None = None
    ) -> Stack:
        store = await open_store(database_url, keyring)
        waiters = ChangeWaiters()
        store.subscribe(waiters.on_change)
        client = open_redis(redis_url) if redis_url else None
        redis_lock = RedisLock(client, prefix=prefix) if client is not None else None
        locks = RefreshLocks(redis_lock, StoreLease((lease_store or store).db))
        http = TokenHttp(allow_private=True)
        stack = Stack(store, Refresher(store, locks, http, waiters, SETTINGS), http, client)
        stacks.append(stack)
        return stack

    first = await make_stack()
    provider = parse_catalogue(CATALOGUE, "test")["fake-oauth"]
    environment = await first.store.create_environment("dev")
    integration = await first.store.create_integration(
        environment.id,
        unique_key="fake",
        provider="fake-oauth",
        credentials={"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"},
    )
    try:
        yield World(endpoint, provider, integration, server.port or 0, make_stack, first, elsewhere)
    finally:
        for stack in stacks:
            await stack.close()
        await elsewhere.close()
        await server.close()


async def test_a_token_that_is_not_due_is_used_without_any_call(world: World) -> None:
    connection = await world.connection("c1", expires_in=3600)

    assert await world.fresh(world.first, connection) is connection
    assert world.endpoint.issued == 0


async def test_a_due_token_is_renewed_and_the_rotated_refresh_token_persisted(
    world: World,
) -> None:
    connection = await world.connection("c1")

    renewed = await world.fresh(world.first, connection)

    assert world.endpoint.issued == 1
    assert renewed.version == connection.version + 1
    assert renewed.credentials["access_token"] == "at-c1-1"
    assert renewed.credentials["refresh_token"] == "rt-c1-1"
    assert (stored_expiry(renewed.credentials) or 0) > time.time() + 3000
    assert renewed.refresh.last_refresh_at is not None
    stored = await world.first.store.get_connection(connection.environment_id, "fake", "c1")
    assert stored == renewed


async def test_concurrent_callers_in_one_process_share_one_refresh(world: World) -> None:
    connection = await world.connection("c1")
    world.endpoint.hold = release = asyncio.Event()

    callers = [asyncio.ensure_future(world.fresh(world.first, connection)) for _ in range(50)]
    await world.endpoint.entered.wait()
    release.set()
    results = await asyncio.gather(*callers)

    assert world.endpoint.issued == 1
    assert world.endpoint.reused == 0
    assert {result.credentials["access_token"] for result in results} == {"at-c1-1"}


@pytest.mark.parametrize("redis_url", [REDIS_URL, DEAD_REDIS_URL], ids=["redis", "redis-down"])
async def test_two_processes_refresh_a_connection_once(world: World, redis_url: str) -> None:
    first = await world.make_stack(redis_url)
    second = await world.make_stack(redis_url)
    connection = await world.connection("c1")
    world.endpoint.hold = release = asyncio.Event()

    one = asyncio.ensure_future(world.fresh(first, connection))
    await world.endpoint.entered.wait()
    other = asyncio.ensure_future(world.fresh(second, connection))
    release.set()
    results = await asyncio.gather(one, other)

    assert world.endpoint.issued == 1
    assert world.endpoint.reused == 0
    assert [result.credentials["refresh_token"] for result in results] == ["rt-c1-1"] * 2


async def test_a_forced_refresh_of_an_outdated_version_uses_the_newer_one(world: World) -> None:
    connection = await world.connection("c1", expires_in=3600)
    newer = await world.fresh(world.first, connection, force=True)

    again = await world.fresh(world.first, connection, force=True)

    assert world.endpoint.issued == 1
    assert again == newer


async def test_a_refused_refresh_needs_reauthorisation_until_new_credentials(
    world: World,
) -> None:
    connection = await world.connection("c1")
    world.endpoint.failures.append((400, {"error": "invalid_grant"}))

    with pytest.raises(NeedsReauthorization) as refused:
        await world.fresh(world.first, connection)
    stored = await world.first.store.get_connection(connection.environment_id, "fake", "c1")
    assert stored is not None
    assert stored.refresh.needs_reauth
    assert stored.refresh.error == "invalid_grant"
    assert "rt-c1-0" not in str(refused.value)

    calls_before = world.endpoint.issued
    with pytest.raises(NeedsReauthorization):
        await world.fresh(world.first, stored)
    assert world.endpoint.issued == calls_before  # failed fast, no token call

    reauthorised = await world.connection("c1")
    assert not reauthorised.refresh.needs_reauth
    assert (await world.fresh(world.first, reauthorised)).credentials["access_token"] == "at-c1-1"


async def test_a_transient_failure_backs_off_and_keeps_a_still_valid_token(
    world: World,
) -> None:
    # Inside the 15 min margin, and the token has lived long enough for that margin.
    valid = await world.obtained_long_ago(await world.connection("c1", expires_in=60))
    world.endpoint.failures.append((503, {"error": "temporarily_unavailable"}))

    kept = await world.fresh(world.first, valid)

    assert kept.credentials["access_token"] == "at-c1-0"
    assert kept.refresh.failures == 1
    assert kept.refresh.error == "provider_5xx"
    assert kept.refresh.retry_at is not None
    assert kept.refresh.retry_at > time.time() * 1000
    assert await world.fresh(world.first, kept) == kept  # backing off: no call
    assert world.endpoint.issued == 0


async def test_an_expired_token_whose_refresh_failed_reports_backoff(world: World) -> None:
    expired = await world.connection("c1")
    world.endpoint.failures.append((500, {}))

    with pytest.raises(RefreshFailed):
        await world.fresh(world.first, expired)
    stored = await world.first.store.get_connection(expired.environment_id, "fake", "c1")
    assert stored is not None
    with pytest.raises(RefreshBackoff):
        await world.fresh(world.first, stored)

    recovered = await world.fresh(world.first, stored, force=True, bypass_backoff=True)
    assert recovered.credentials["access_token"] == "at-c1-1"
    assert recovered.refresh.failures == 0
    assert recovered.refresh.error is None


async def test_a_rejected_duplicate_is_absorbed_by_rereading_the_store(world: World) -> None:
    """Another process rotated the token just before our call reached the provider."""
    # A process whose lease excluded nobody (as when a lease expired under a stalled
    # holder): both refresh, and the provider rejects the slower one's reused token.
    other = await world.make_stack(DEAD_REDIS_URL, lease_store=world.elsewhere)
    connection = await world.connection("c1")
    world.endpoint.hold = release = asyncio.Event()
    ours = asyncio.ensure_future(world.fresh(world.first, connection))
    await world.endpoint.entered.wait()

    theirs = await world.fresh(other, connection)  # overtakes ours at the provider
    release.set()
    result = await ours

    assert world.endpoint.issued == 1
    assert world.endpoint.reused == 1
    assert result.credentials["refresh_token"] == theirs.credentials["refresh_token"]
    stored = await world.first.store.get_connection(connection.environment_id, "fake", "c1")
    assert stored == theirs
    assert not stored.refresh.needs_reauth


async def test_a_renewable_connection_without_a_token_yet_is_due_at_once(world: World) -> None:
    await world.connection("c1")
    tokenless = await world.first.store.upsert_connection(
        world.integration.environment_id,
        world.integration,
        connection_id="c1",
        credentials={"type": "OAUTH2", "refresh_token": "rt-c1-0"},
        connection_config={"port": str(world.port)},
    )

    renewed = await world.fresh(world.first, tokenless)

    assert renewed.credentials["access_token"] == "at-c1-1"


async def test_a_short_lived_token_is_renewed_halfway_not_on_every_call(world: World) -> None:
    # Five minutes of life is less than the 15 minute margin: the margin shrinks to half.
    short = await world.connection("c1", expires_in=300)
    assert await world.fresh(world.first, short) is short

    assert world.endpoint.issued == 0
    # The same five minutes left on an hour-long token: inside the full margin.
    long_lived = await world.obtained_long_ago(short)
    assert world.first.refresher.due_at(long_lived, world.provider) < time.time()
