"""PostgreSQL goes away under a running authgate, then comes back.

authgate reaches its database through a TCP relay the test can cut: a cut resets every
connection and refuses new ones, as a crashed server or a dropped network would. While
cut, every request that needs the store answers 503 `store_unavailable` (never a 500,
never a traceback); the rows read straight from PostgreSQL afterwards prove that nothing
was half-written; and after the relay is restored the same process serves writes again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from yarl import URL

from credentials.database import (
    Database,
    PostgresDatabase,
    StoreUnavailable,
    UniqueViolation,
    open_database,
)
from credentials.migrations import migrate
from credentials.tasks import spawn
from tests.e2e.conftest import Authgate, Factory, json_of
from tests.support import postgres_database
from tests.tcp_relay import TcpRelay

UNAVAILABLE_BODY = {
    "error": {
        "code": "store_unavailable",
        "message": "The credential store is unreachable; try again",
    }
}
# Every table a management write touches; `SELECT *` so no column can change unseen.
TABLES = ("environments", "secret_keys", "integrations", "connections", "environment_variables")
BASIC = {"type": "BASIC", "username": "user", "password": "basic-password"}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def direct_url(tmp_path: Path) -> AsyncIterator[str]:
    """A throwaway schema, reached without the relay (for the test's own reads)."""
    async with postgres_database(tmp_path) as url:
        yield url


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    async with TcpRelay("127.0.0.1", 5432) as running:
        yield running


@pytest.fixture
def database_url(direct_url: str, relay: TcpRelay) -> str:
    """authgate's DATABASE_URL: the same schema, through the relay (PostgreSQL only)."""
    assert "@127.0.0.1:5432/" in direct_url
    return direct_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{relay.port}/")


@pytest.fixture
async def authgate(make_authgate: Factory) -> Authgate:
    """A running authgate with integration `basic` and connections c1, c2."""
    instance = await make_authgate()
    await instance.integration("basic", "fake-basic")
    for connection_id in ("c1", "c2"):
        await instance.connection("basic", connection_id, BASIC, metadata={"n": connection_id})
    return instance


# --- helpers -------------------------------------------------------------------------------


async def stored_rows(direct_url: str) -> dict[str, list[dict[str, Any]]]:
    connection = await asyncpg.connect(direct_url)
    try:
        return {
            table: [
                dict(row)
                for row in await connection.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")  # noqa: S608
            ]
            for table in TABLES
        }
    finally:
        await connection.close()


async def send(
    authgate: Authgate, method: str, path: str, body: Any = None, *, key: str | None = None
) -> aiohttp.ClientResponse:
    url = URL(str(authgate.url).rstrip("/") + path, encoded=True)
    response = await authgate.session.request(method, url, json=body, headers=authgate.auth(key))
    await response.read()
    return response


async def assert_store_unavailable(response: aiohttp.ClientResponse) -> None:
    assert response.status == 503, await response.text()
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Authgate-Error"] == "store_unavailable"
    assert await json_of(response) == UNAVAILABLE_BODY


def management_writes() -> list[tuple[str, str, Any]]:
    """Connection import (new and overwrite), metadata (both verbs, several ids),
    integration create and update, connection fields."""
    return [
        (
            "POST",
            "/connections",
            {"provider_config_key": "basic", "connection_id": "c3", "credentials": BASIC},
        ),
        (
            "POST",
            "/connections",
            {
                "provider_config_key": "basic",
                "connection_id": "c1",
                "credentials": {**BASIC, "password": "replaced"},
            },
        ),
        (
            "PATCH",
            "/connections/metadata",
            {"connection_id": ["c1", "c2"], "provider_config_key": "basic", "metadata": {"x": 1}},
        ),
        (
            "POST",
            "/connections/metadata",
            {"connection_id": "c2", "provider_config_key": "basic", "metadata": {"y": 2}},
        ),
        ("POST", "/integrations", {"unique_key": "other", "provider": "fake-basic"}),
        ("PATCH", "/integrations/basic", {"display_name": "Renamed"}),
        ("PATCH", "/connections/c1?provider_config_key=basic", {"tags": {"team": "a"}}),
    ]


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """A bounded poll of a condition another connection brings about."""
    for _ in range(1000):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# --- management ----------------------------------------------------------------------------


async def test_management_writes_answer_503_while_cut_and_work_after_restore(
    authgate: Authgate, relay: TcpRelay, direct_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = await stored_rows(direct_url)
    relay.cut()
    for method, path, body in management_writes():
        await assert_store_unavailable(await send(authgate, method, path, body))
    await assert_store_unavailable(await send(authgate, "GET", "/connections"))
    # A key this process has not seen yet cannot be checked either: 503, not 401.
    await assert_store_unavailable(
        await send(authgate, "GET", "/integrations", key=str(uuid.uuid4()))
    )

    relay.restore()
    assert await stored_rows(direct_url) == before
    for method, path, body in management_writes():
        response = await send(authgate, method, path, body)
        assert response.status < 300, (method, path, await response.text())
    after = await stored_rows(direct_url)
    assert [row["connection_id"] for row in after["connections"]] == ["c1", "c2", "c3"]
    assert [row["unique_key"] for row in after["integrations"]] == ["basic", "other"]

    outage_logs = [record for record in caplog.records if "store unavailable" in record.message]
    assert outage_logs, "the outage was not logged"
    for record in outage_logs:
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        assert "postgresql://" not in record.getMessage()


async def test_a_transaction_cut_mid_way_leaves_nothing_written(
    authgate: Authgate, relay: TcpRelay, direct_url: str
) -> None:
    """A bulk metadata write is one transaction: it has begun and locked c1, and waits
    for c2, which the test holds, when the relay is cut. The answer is a 503, the server
    rolls the transaction back, and the same write succeeds once the store is back."""
    before = await stored_rows(direct_url)
    write = ("PATCH", "/connections/metadata")
    body = {"connection_id": ["c1", "c2"], "provider_config_key": "basic", "metadata": {"x": 1}}
    holder = await asyncpg.connect(direct_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM connections WHERE connection_id = 'c2' FOR UPDATE")
            pending = spawn(send(authgate, *write, body), name="metadata-write")
            await wait_for(lambda: _blocked(holder), "the metadata write to wait for c2")
            relay.cut()
            await assert_store_unavailable(await pending)
            # The orphaned server process would carry on once c2 is free; end it first.
            for pid in await blocked_by(holder):
                await holder.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await holder.close()

    relay.restore()
    assert await stored_rows(direct_url) == before
    response = await send(authgate, *write, body)
    assert response.status == 200, await response.text()
    metadata = {
        row["connection_id"]: row["metadata"]
        for row in (await stored_rows(direct_url))["connections"]
    }
    assert metadata == {"c1": '{"n":"c1","x":1}', "c2": '{"n":"c2","x":1}'}


async def blocked_by(holder: asyncpg.Connection) -> list[int]:
    """Server processes waiting for a lock `holder` holds (pg_locks is never a stale
    snapshot, unlike pg_stat_activity inside a transaction)."""
    rows = await holder.fetch(
        "SELECT DISTINCT pid FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))",
        holder.get_server_pid(),
    )
    return [int(row["pid"]) for row in rows]


async def _blocked(holder: asyncpg.Connection) -> bool:
    return bool(await blocked_by(holder))


# --- proxy ---------------------------------------------------------------------------------


async def test_proxy_answers_503_for_an_uncached_connection_while_cut(
    authgate: Authgate, relay: TcpRelay
) -> None:
    relay.cut()
    response = await authgate.proxy(
        "GET", "/proxy/users", provider_config_key="basic", connection_id="c2"
    )
    await assert_store_unavailable(response)
    assert response.headers["X-Authgate-Request-Id"]
    unknown_key = await authgate.proxy(
        "GET",
        "/proxy/users",
        provider_config_key="basic",
        connection_id="c2",
        key=str(uuid.uuid4()),
    )
    await assert_store_unavailable(unknown_key)
    assert authgate.provider.received == []

    relay.restore()
    response = await authgate.proxy(
        "GET", "/proxy/users", provider_config_key="basic", connection_id="c2"
    )
    assert response.status == 200, await response.text()
    assert authgate.provider.last().header("Authorization") == "Basic dXNlcjpiYXNpYy1wYXNzd29yZA=="


async def test_proxy_serves_a_warm_connection_without_the_store(
    authgate: Authgate, relay: TcpRelay
) -> None:
    """Within the cache's time-to-live a proxied call needs no store read at all."""
    warm = await authgate.proxy(
        "GET", "/proxy/users", provider_config_key="basic", connection_id="c1"
    )
    assert warm.status == 200, await warm.text()
    relay.cut()
    response = await authgate.proxy(
        "GET", "/proxy/users", provider_config_key="basic", connection_id="c1"
    )
    assert response.status == 200, await response.text()
    assert len(authgate.provider.received) == 2


async def test_proxy_serves_an_expired_cache_entry_while_the_store_is_down(
    make_authgate: Factory, relay: TcpRelay
) -> None:
    """Expired means "re-check", not "wrong": the last known connection beats a 503."""
    instance = await make_authgate(AUTHGATE_CACHE_TTL="0.001")  # every entry expires at once
    await instance.integration("basic", "fake-basic")
    await instance.connection("basic", "c1", BASIC)
    warm = await instance.proxy(
        "GET", "/proxy/users", provider_config_key="basic", connection_id="c1"
    )
    assert warm.status == 200, await warm.text()

    relay.cut()
    response = await instance.proxy(
        "GET", "/proxy/users", provider_config_key="basic", connection_id="c1"
    )

    assert response.status == 200, await response.text()
    assert instance.provider.last().header("Authorization") == "Basic dXNlcjpiYXNpYy1wYXNzd29yZA=="


# --- the database layer --------------------------------------------------------------------


async def test_sql_errors_stay_sql_errors(database_url: str) -> None:
    db = await open_database(database_url)
    try:
        await migrate(db)
        with pytest.raises(asyncpg.UndefinedColumnError):
            await db.fetchval("SELECT no_such_column FROM environments")
        await db.execute("INSERT INTO environments (name, created_at) VALUES ('x', 0)")
        with pytest.raises(UniqueViolation):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO environments (name, created_at) VALUES ('x', 0)")
    finally:
        await db.close()


async def test_a_callers_own_error_passes_through_a_transaction(database_url: str) -> None:
    """Only the database's failures are translated: an OSError raised by the block (say,
    an HTTP call) keeps its type, and the transaction is rolled back."""
    db = await open_database(database_url)
    try:
        await migrate(db)
        with pytest.raises(ConnectionRefusedError):
            await insert_then_fail(db)
        assert await db.fetchval("SELECT COUNT(*) FROM environments WHERE name = 'y'") == 0
    finally:
        await db.close()


async def insert_then_fail(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO environments (name, created_at) VALUES ('y', 0)")
        raise ConnectionRefusedError("a call made inside the block failed")


async def test_an_open_pool_fails_fast_while_cut_and_heals_after(
    database_url: str, relay: TcpRelay
) -> None:
    db = await open_database(database_url)
    try:
        assert await db.fetchval("SELECT 1") == 1
        relay.cut()
        with pytest.raises(StoreUnavailable) as raised:
            await db.fetchval("SELECT 1")
        assert raised.value.__cause__ is None
        assert raised.value.__suppress_context__
        with pytest.raises(StoreUnavailable):
            async with db.transaction() as tx:
                await tx.execute("SELECT 1")
        relayed_before = relay.accepted
        relay.restore()
        assert await db.fetchval("SELECT 2") == 2
        # The same pool, healed by a fresh connection through the restored relay.
        assert relay.accepted > relayed_before
    finally:
        await db.close()


async def test_a_server_that_never_answers_times_out() -> None:
    """Connecting is bounded by the acquire timeout: a hung server cannot hang a caller."""
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(StoreUnavailable, match=r"PostgreSQL .* \(TimeoutError\)"):
            await PostgresDatabase.open(
                f"postgresql://postgres@127.0.0.1:{port}/test", max_size=1, acquire_timeout=0.2
            )
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_messages_name_neither_the_dsn_nor_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as refused:
        await open_database("postgresql://postgres:hunter2-secret@127.0.0.1:9/test")
    assert "hunter2" not in str(refused.value)
    assert "127.0.0.1" not in str(refused.value)
    # A directory where the database file should be: SQLite cannot open it.
    with pytest.raises(StoreUnavailable, match=r"SQLite .*SQLITE_CANTOPEN") as cannot_open:
        await open_database(f"sqlite:///{tmp_path}")
    assert str(tmp_path) not in str(cannot_open.value)
