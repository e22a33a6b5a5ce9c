"""The shared Redis tier of connection rows: ciphertext only, and never older than the store.

Each "process" is a store of its own on the same database and a cache with a Redis
client of its own, on the shared Redis under a prefix unique to the test. The writing
process's store reports its writes to its cache, as `open_core` wires it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as sync_redis
import redis.asyncio as redis
import uvloop

from credentials.connection_cache import (
    MAX_FILL_WINDOW,
    ConnectionCache,
    ConnectionKey,
    ConnectionRecord,
    Miss,
)
from credentials.crypto import Keyring, generate_key
from credentials.models import Environment, Integration
from credentials.redis_client import open_redis
from credentials.store import ChangeEvent, SqlStore, open_store
from tests.credentials.private_redis import SilentServer, free_port
from tests.tcp_relay import TcpRelay

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
ACCESS_TOKEN = "plain-access-token-1"
CLIENT_SECRET = "plain-client-secret"
OAUTH_CLIENT = {"type": "OAUTH2", "client_id": "cid", "client_secret": CLIENT_SECRET}
# A Redis that hangs must cost one short timeout, far below redis-py's own 5 s default.
GUARD_SECONDS = 2.0
POLL_SECONDS = 0.05
POLL_ATTEMPTS = 200


def oauth(token: str) -> dict[str, Any]:
    return {"type": "OAUTH2", "access_token": token}


@dataclass
class Process:
    """One authgate process as far as the tier is concerned: its store and its cache."""

    store: SqlStore
    cache: ConnectionCache


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


Spawn = Callable[..., Awaitable[Process]]


@pytest.fixture
async def spawn_process(
    database_url: str, keyring: Keyring, prefix: str, raw_redis: redis.Redis
) -> AsyncIterator[Spawn]:
    opened: list[tuple[Process, redis.Redis]] = []

    async def start(
        *,
        keys: Keyring | None = None,
        redis_url: str = SHARED_REDIS_URL,
        clock: Callable[[], float] = time.monotonic,
    ) -> Process:
        store = await open_store(database_url, keys or keyring)
        client = open_redis(redis_url)
        cache = ConnectionCache(client, store, prefix=prefix, clock=clock)
        store.subscribe(cache.on_local_change)
        process = Process(store, cache)
        opened.append((process, client))
        return process

    yield start
    for process, client in reversed(opened):
        await process.cache.close()
        await client.aclose()
        await process.store.close()


@dataclass
class World:
    environment: Environment
    integration: Integration
    key: ConnectionKey


async def seed(store: SqlStore, connection_id: str = "conn-1") -> World:
    environment = await store.create_environment(f"env-{uuid.uuid4().hex[:8]}")
    integration = await store.create_integration(
        environment.id, unique_key="oauth", provider="github", credentials=OAUTH_CLIENT
    )
    await store.upsert_connection(
        environment.id,
        integration,
        connection_id=connection_id,
        credentials=oauth(ACCESS_TOKEN),
        connection_config={"subdomain": "acme"},
    )
    return World(environment, integration, (environment.id, "oauth", connection_id))


async def warmed(spawn_process: Spawn) -> tuple[Process, Process, World]:
    """A writer and a reader process, and a connection whose value is in Redis."""
    writer = await spawn_process()
    reader = await spawn_process()
    world = await seed(writer.store)
    await writer.cache.drain()
    assert await writer.cache.load(world.key) is not None
    assert writer.cache.stats.fills == 1
    return writer, reader, world


async def load(process: Process, key: ConnectionKey) -> ConnectionRecord:
    record = await process.cache.load(key)
    assert record is not None
    return record


async def poll_until(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(POLL_ATTEMPTS):
        if await condition():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError("condition not met in time")


# --- hits and misses -----------------------------------------------------------------------


async def test_a_miss_reads_the_store_and_another_process_then_hits_redis(
    spawn_process: Spawn,
) -> None:
    writer, reader, world = await warmed(spawn_process)
    assert (writer.cache.stats.misses, writer.cache.stats.store_reads) == (1, 1)

    record = await load(reader, world.key)

    assert (reader.cache.stats.hits, reader.cache.stats.store_reads) == (1, 0)
    assert record.connection == await reader.store.get_connection(*world.key)
    assert record.integration == await reader.store.get_integration(world.key[0], "oauth")
    assert record.connection.credentials["access_token"] == ACCESS_TOKEN
    assert record.integration.credentials == OAUTH_CLIENT


async def test_unknown_connections_and_integrations_are_none_and_not_cached(
    spawn_process: Spawn, raw_redis: redis.Redis
) -> None:
    process = await spawn_process()
    world = await seed(process.store)
    environment_id = world.environment.id
    assert await process.cache.load((environment_id, "oauth", "nobody")) is None
    assert await process.cache.load((environment_id, "nothing", "conn-1")) is None
    assert process.cache.stats.fills == 0
    assert await raw_redis.exists(process.cache.value_key((environment_id, "oauth", "nobody"))) == 0


async def test_redis_holds_the_rows_as_stored_and_never_a_decrypted_secret(
    spawn_process: Spawn, raw_redis: redis.Redis, prefix: str
) -> None:
    writer, _, world = await warmed(spawn_process)
    value_key = writer.cache.value_key(world.key)
    assert value_key == f"{prefix}:conn:{world.environment.id}:oauth:conn-1"

    raw = await raw_redis.get(value_key)

    assert raw is not None
    assert ACCESS_TOKEN.encode() not in raw
    assert CLIENT_SECRET.encode() not in raw
    assert b"ag1." in raw
    entry = orjson.loads(orjson.loads(raw)[2])
    stored_connection = await writer.store.get_connection_sealed(*world.key)
    stored_integration = await writer.store.get_integration_sealed(world.key[0], "oauth")
    assert entry["connection"] == stored_connection
    assert entry["integration"] == stored_integration
    assert stored_connection is not None
    assert stored_connection["credentials_enc"].startswith("ag1.")


async def test_ids_containing_separators_get_keys_of_their_own(spawn_process: Spawn) -> None:
    writer = await spawn_process()
    reader = await spawn_process()
    environment = await writer.store.create_environment("separators")
    for unique_key, connection_id, token in (("a", "b:c", "token-ab"), ("a:b", "c", "token-a")):
        integration = await writer.store.create_integration(
            environment.id, unique_key=unique_key, provider="github"
        )
        await writer.store.upsert_connection(
            environment.id, integration, connection_id=connection_id, credentials=oauth(token)
        )
    await writer.cache.drain()
    await writer.cache.load((environment.id, "a", "b:c"))
    await writer.cache.load((environment.id, "a:b", "c"))
    assert writer.cache.stats.fills == 2
    assert writer.cache.value_key((environment.id, "a", "b:c")) != writer.cache.value_key(
        (environment.id, "a:b", "c")
    )
    first = await load(reader, (environment.id, "a", "b:c"))
    second = await load(reader, (environment.id, "a:b", "c"))
    assert reader.cache.stats.hits == 2
    assert first.connection.credentials["access_token"] == "token-ab"
    assert second.connection.credentials["access_token"] == "token-a"


# --- invalidation on every kind of write -------------------------------------------------


Write = Callable[[SqlStore, World], Awaitable[object]]


async def _new_token(store: SqlStore, world: World) -> object:
    return await store.upsert_connection(
        world.environment.id, world.integration, connection_id="conn-1", credentials=oauth("t2")
    )


async def _refreshed(store: SqlStore, world: World) -> object:
    connection = await store.get_connection(*world.key)
    assert connection is not None
    return await store.update_credentials(
        connection, oauth("t2"), expected_version=connection.version
    )


async def _metadata(store: SqlStore, world: World) -> object:
    return await store.write_metadata(
        world.environment.id, "oauth", ["conn-1"], {"plan": "pro"}, merge=True
    )


async def _connection_config(store: SqlStore, world: World) -> object:
    return await store.update_connection_fields(
        *world.key, connection_config={"subdomain": "other"}
    )


async def _refresh_failure(store: SqlStore, world: World) -> object:
    connection = await store.get_connection(*world.key)
    assert connection is not None
    return await store.record_refresh_failure(
        connection, error="invalid_grant", needs_reauth=True, retry_at=None
    )


async def _integration_secret(store: SqlStore, world: World) -> object:
    return await store.update_integration(
        world.environment.id, "oauth", credentials={**OAUTH_CLIENT, "client_secret": "s2"}
    )


@pytest.mark.parametrize(
    ("write", "changed"),
    [
        (_new_token, lambda r: r.connection.credentials["access_token"] == "t2"),
        (_refreshed, lambda r: r.connection.credentials["access_token"] == "t2"),
        # These three leave the row's version alone: a version check would miss them.
        (
            _metadata,
            lambda r: r.connection.metadata == {"plan": "pro"} and r.connection.version == 1,
        ),
        (_connection_config, lambda r: r.connection.connection_config == {"subdomain": "other"}),
        (_refresh_failure, lambda r: r.connection.refresh.needs_reauth),
        (_integration_secret, lambda r: r.integration.credentials["client_secret"] == "s2"),
    ],
    ids=["credentials", "refresh", "metadata", "config", "refresh-failure", "integration"],
)
async def test_every_write_retires_the_cached_value_for_every_process(
    spawn_process: Spawn, write: Write, changed: Callable[[ConnectionRecord], bool]
) -> None:
    writer, reader, world = await warmed(spawn_process)
    assert not changed(await load(reader, world.key))
    assert reader.cache.stats.hits == 1

    await write(writer.store, world)
    await writer.cache.drain()

    assert changed(await load(reader, world.key))
    assert (reader.cache.stats.hits, reader.cache.stats.store_reads) == (1, 1)
    assert changed(await load(reader, world.key))  # refilled: a hit again
    assert reader.cache.stats.hits == 2


async def test_a_deleted_connection_is_gone_from_redis(
    spawn_process: Spawn, raw_redis: redis.Redis
) -> None:
    writer, reader, world = await warmed(spawn_process)
    assert await writer.store.delete_connection(*world.key)
    await writer.cache.drain()
    assert await raw_redis.exists(writer.cache.value_key(world.key)) == 0
    assert await reader.cache.load(world.key) is None


async def test_an_integration_change_retires_every_connection_of_the_environment(
    spawn_process: Spawn,
) -> None:
    writer, reader, world = await warmed(spawn_process)
    await writer.store.upsert_connection(
        world.environment.id, world.integration, connection_id="conn-2", credentials=oauth("x")
    )
    other = (world.environment.id, "oauth", "conn-2")
    await writer.cache.drain()
    await writer.cache.load(other)
    await load(reader, world.key)
    await load(reader, other)
    assert reader.cache.stats.hits == 2

    assert await writer.store.delete_integration(world.environment.id, "oauth")
    await writer.cache.drain()

    assert await reader.cache.load(world.key) is None
    assert await reader.cache.load(other) is None
    assert reader.cache.stats.hits == 2


async def test_a_secret_key_change_keeps_cached_connections(spawn_process: Spawn) -> None:
    writer, reader, world = await warmed(spawn_process)
    await writer.store.add_secret_key(world.environment.id, uuid.uuid4().bytes)
    await writer.cache.drain()
    await load(reader, world.key)
    assert reader.cache.stats.hits == 1


async def test_the_writer_skips_redis_until_its_tombstone_is_written(spawn_process: Spawn) -> None:
    writer, _, world = await warmed(spawn_process)
    await _new_token(writer.store, world)
    # No await between the write's event and this load: the tombstone is still in flight.
    record = await load(writer, world.key)
    assert record.connection.credentials["access_token"] == "t2"
    assert writer.cache.stats.skipped == 1


# --- the race between a slow reader and a writer -------------------------------------------


async def test_a_fill_read_before_a_write_is_refused_after_its_tombstone(
    spawn_process: Spawn, raw_redis: redis.Redis
) -> None:
    writer = await spawn_process()
    reader = await spawn_process()
    world = await seed(writer.store)
    await writer.cache.drain()

    # The reader misses and reads the store ...
    miss = await reader.cache.lookup(world.key)
    assert isinstance(miss, Miss)
    old_rows = await reader.cache.read_rows(world.key)
    assert old_rows is not None
    # ... then a write commits and its process writes the tombstone ...
    await _new_token(writer.store, world)
    await writer.cache.drain()
    # ... and only then does the slow reader's fill arrive.
    assert await reader.cache.fill(miss, old_rows) is False

    assert reader.cache.stats.refused_fills == 1
    assert await raw_redis.exists(reader.cache.value_key(world.key)) == 0
    record = await load(reader, world.key)
    assert record.connection.credentials["access_token"] == "t2"


async def test_a_fill_that_lands_before_the_tombstone_is_retired_by_it(
    spawn_process: Spawn,
) -> None:
    writer = await spawn_process()
    reader = await spawn_process()
    world = await seed(writer.store)
    await writer.cache.drain()
    # Hold the writer's events back, to land the stale fill between commit and tombstone.
    writer.store.unsubscribe(writer.cache.on_local_change)
    held: list[ChangeEvent] = []
    writer.store.subscribe(held.append)

    miss = await reader.cache.lookup(world.key)
    assert isinstance(miss, Miss)
    old_rows = await reader.cache.read_rows(world.key)
    assert old_rows is not None
    await _new_token(writer.store, world)
    assert await reader.cache.fill(miss, old_rows) is True  # the old row is in Redis ...
    for event in held:
        writer.cache.on_local_change(event)
    await writer.cache.drain()

    assert isinstance(await reader.cache.lookup(world.key), Miss)  # ... but no longer current
    record = await load(reader, world.key)
    assert record.connection.credentials["access_token"] == "t2"


async def test_a_fill_later_than_the_fill_window_is_dropped(spawn_process: Spawn) -> None:
    clock = Monotonic()
    process = await spawn_process(clock=clock)
    world = await seed(process.store)
    await process.cache.drain()
    miss = await process.cache.lookup(world.key)
    assert isinstance(miss, Miss)
    rows = await process.cache.read_rows(world.key)
    assert rows is not None
    clock.now += MAX_FILL_WINDOW + 0.001
    assert await process.cache.fill(miss, rows) is False
    assert process.cache.stats.refused_fills == 1


async def test_the_change_is_published_only_after_its_tombstone(
    spawn_process: Spawn, raw_redis: redis.Redis
) -> None:
    writer, _, world = await warmed(spawn_process)
    value_key = writer.cache.value_key(world.key)
    assert await raw_redis.exists(value_key) == 1
    # What another process would see the moment the event reaches it (a blocking client,
    # so the look happens inside the publish call, before anything else can run).
    seen_on_publish: list[int] = []
    probe = sync_redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=1)
    writer.store.unsubscribe(writer.cache.on_local_change)
    publish = writer.cache.publishing_after_invalidation(
        lambda event: seen_on_publish.append(int(probe.exists(value_key)))
    )
    writer.store.subscribe(publish)
    try:
        await _new_token(writer.store, world)
        await writer.cache.drain()
    finally:
        probe.close()
    assert seen_on_publish == [0]


# --- keys the process lacks, and tampering -------------------------------------------------


async def test_a_value_sealed_under_a_key_this_process_lacks_is_a_miss(
    spawn_process: Spawn, encryption_key: bytes
) -> None:
    old_key_only = await spawn_process()
    world = await seed(old_key_only.store)
    await old_key_only.cache.drain()
    # A process already rotated to a new first key fills Redis ...
    rotated = await spawn_process(keys=Keyring([generate_key(), encryption_key]))
    await load(rotated, world.key)
    assert rotated.cache.stats.fills == 1

    # ... and one still on the old key alone cannot open it: it reads the store.
    record = await load(old_key_only, world.key)

    assert record.connection.credentials["access_token"] == ACCESS_TOKEN
    assert old_key_only.cache.stats.unreadable == 1
    assert old_key_only.cache.stats.store_reads == 1


async def test_a_tampered_value_is_not_trusted(
    spawn_process: Spawn, raw_redis: redis.Redis
) -> None:
    writer, reader, world = await warmed(spawn_process)
    value_key = writer.cache.value_key(world.key)
    raw = await raw_redis.get(value_key)
    assert raw is not None
    version, seal, payload = orjson.loads(raw)
    forged = payload.replace('\\"subdomain\\":\\"acme\\"', '\\"subdomain\\":\\"evil\\"')
    assert forged != payload
    await raw_redis.set(value_key, orjson.dumps([version, seal, forged]), keepttl=True)

    record = await load(reader, world.key)

    assert record.connection.connection_config == {"subdomain": "acme"}
    assert reader.cache.stats.unreadable == 1
    assert reader.cache.stats.store_reads == 1


# --- Redis failures --------------------------------------------------------------------------


async def test_an_unreachable_redis_costs_one_failure_and_the_store_answers(
    spawn_process: Spawn,
) -> None:
    world = await seed((await spawn_process()).store)
    process = await spawn_process(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    first = await load(process, world.key)
    second = await load(process, world.key)

    assert first.connection.credentials["access_token"] == ACCESS_TOKEN
    assert second == first
    assert process.cache.stats.store_reads == 2
    # The first lookup failed and opened the breaker; the second never asked Redis.
    assert (process.cache.stats.failures, process.cache.stats.skipped) == (1, 1)


def test_a_connection_reset_under_uvloop_is_a_fallback_not_an_error(
    tmp_path: Path, keyring: Keyring, prefix: str
) -> None:
    """Under uvloop (what serving runs), a command written to a connection the peer has
    reset fails in the transport with a RuntimeError, not a redis-py error. The proxy
    reads connections through this tier: that must be a fallback to the store."""

    async def scenario() -> tuple[str, int]:
        store = await open_store(f"sqlite:///{tmp_path / 'reset.db'}", keyring)
        async with TcpRelay("127.0.0.1", 6379) as relay:
            client = open_redis(f"redis://127.0.0.1:{relay.port}/0")
            cache = ConnectionCache(client, store, prefix=prefix)
            try:
                world = await seed(store)
                await cache.load(world.key)
                [pooled] = client.connection_pool._available_connections  # redis-py's pool
                relay.reset()
                # The reset has reached the client once its transport is closed; the next
                # command is then written to a closed transport.
                await poll_until(lambda: _true_after(_transport_closed(pooled)))
                record = await cache.load(world.key)
                assert record is not None
                return record.connection.credentials["access_token"], cache.stats.failures
            finally:
                await cache.close()
                await client.aclose()
                await store.close()

    assert uvloop.run(scenario()) == (ACCESS_TOKEN, 1)


async def _true_after(condition: bool) -> bool:
    return condition


def _transport_closed(connection: Any) -> bool:
    writer = connection._writer
    return writer is not None and writer.transport.is_closing()


async def test_a_write_while_redis_is_unreachable_does_not_fail(spawn_process: Spawn) -> None:
    process = await spawn_process(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    world = await seed(process.store)
    await process.cache.drain()
    assert process.cache.stats.failures >= 1
    assert (await load(process, world.key)).connection.credentials["access_token"] == ACCESS_TOKEN


async def test_a_hanging_redis_costs_one_short_timeout_per_cooldown(spawn_process: Spawn) -> None:
    world = await seed((await spawn_process()).store)
    silent = SilentServer()
    await silent.start()
    try:
        process = await spawn_process(redis_url=silent.url)
        started = time.monotonic()
        async with asyncio.timeout(GUARD_SECONDS):
            await load(process, world.key)
            await load(process, world.key)
        assert time.monotonic() - started < GUARD_SECONDS
        assert process.cache.stats.store_reads == 2
        assert (process.cache.stats.failures, process.cache.stats.skipped) == (1, 1)
        assert silent.connections == 1
    finally:
        await silent.stop()


async def test_a_tombstone_that_failed_is_written_once_redis_is_back(
    spawn_process: Spawn,
) -> None:
    async with TcpRelay("127.0.0.1", 6379) as relay:
        writer = await spawn_process(redis_url=f"redis://127.0.0.1:{relay.port}/0")
        reader = await spawn_process()
        world = await seed(writer.store)
        await writer.cache.drain()
        await writer.cache.load(world.key)
        assert writer.cache.stats.fills == 1

        relay.cut()
        await _new_token(writer.store, world)
        await writer.cache.drain()
        # The writer itself skips the tier for that connection while its tombstone is owed;
        # another process serves the old value until the retry lands (or the value expires).
        assert (await load(writer, world.key)).connection.credentials["access_token"] == "t2"
        assert writer.cache.stats.skipped >= 1
        stale = await load(reader, world.key)
        assert stale.connection.credentials["access_token"] == ACCESS_TOKEN

        relay.restore()

        async def retired() -> bool:
            return isinstance(await reader.cache.lookup(world.key), Miss)

        await poll_until(retired)
        record = await load(reader, world.key)
        assert record.connection.credentials["access_token"] == "t2"
