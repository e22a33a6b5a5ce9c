"""`authgate keys rotate`: every stored secret moves to the first configured key, values
unchanged, while servers keep writing; an interrupted run is finished by the next one.

Data is written under key A; the command runs as an operator would run it (a separate
process) configured with "B,A"; afterwards the raw columns are read to check which key
sealed each value, and a store holding only key B must read everything back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from authgate.operator import SEALED_COLUMNS
from credentials.crypto import Keyring, generate_key, key_id
from credentials.environment_settings import EnvironmentSettingsStore
from credentials.models import Connection, Environment
from credentials.store import SqlStore, open_store
from credentials.tasks import spawn
from tests.e2e.operator_cli import CliResult, run_cli
from tests.support import database_urls

CONNECTIONS = 6
# Two integration values (OAuth client, custom map) and two variables besides connections.
# Connections, integration credentials and custom, two variables, two settings secrets.
WEBHOOK_SECRET = "rotation-webhook-signing-secret"
HMAC_KEY = "rotation-hmac-key"
SEALED_VALUES = CONNECTIONS + 2 + 2 + 2
CLIENT_SECRET = "client-secret-rotate-me"
VARIABLE_SECRET = "variable-secret-rotate-me"


def token_for(index: int) -> str:
    return f"access-token-{index}-rotate-me"


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(params=database_urls(), ids=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with request.param(tmp_path) as url:
        yield url


@pytest.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    postgres = database_urls()[1]
    async with postgres(tmp_path) as url:
        yield url


def encoded(*keys: bytes) -> str:
    return ",".join(base64.b64encode(key).decode() for key in keys)


def operator_env(tmp_path: Path, database_url: str, *keys: bytes) -> dict[str, str]:
    return {
        "AUTHGATE_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "AUTHGATE_ENCRYPTION_KEY": encoded(*keys),
    }


@contextlib.asynccontextmanager
async def opened(database_url: str, *keys: bytes) -> AsyncIterator[SqlStore]:
    store = await open_store(database_url, Keyring(keys))
    try:
        yield store
    finally:
        await store.close()


async def seed(database_url: str, key: bytes) -> None:
    """An environment with an OAuth integration (client + custom map), one without any
    secret, CONNECTIONS connections and two variables, all sealed under `key`."""
    async with opened(database_url, key) as store:
        environment = await store.create_environment("prod")
        oauth = await store.create_integration(
            environment.id,
            unique_key="oauth",
            provider="github",
            credentials={"type": "OAUTH2", "client_id": "cid", "client_secret": CLIENT_SECRET},
            custom={"app": "custom-value"},
        )
        await store.create_integration(environment.id, unique_key="plain", provider="github")
        for index in range(CONNECTIONS):
            await store.upsert_connection(
                environment.id,
                oauth,
                connection_id=f"user-{index}",
                credentials={"type": "OAUTH2", "access_token": token_for(index)},
            )
        await store.set_environment_variable(environment.id, "TOKEN", VARIABLE_SECRET)
        await store.set_environment_variable(environment.id, "REGION", "eu-west-1")
        await EnvironmentSettingsStore(store).update(
            environment.id, webhook_secret=WEBHOOK_SECRET, hmac_key=HMAC_KEY
        )


async def prod(store: SqlStore) -> Environment:
    environment = await store.get_environment("prod")
    assert environment is not None
    return environment


async def everything(store: SqlStore) -> dict[str, Any]:
    """Every secret the store holds for `prod`, decrypted."""
    environment = await prod(store)
    return {
        "integrations": {
            integration.unique_key: (integration.credentials, integration.custom)
            for integration in await store.list_integrations(environment.id)
        },
        "connections": {
            connection.connection_id: connection.credentials
            for connection in await store.list_connections(environment.id, limit=1000)
        },
        "variables": await store.list_environment_variables(environment.id),
        "settings": await EnvironmentSettingsStore(store).get(environment.id),
    }


async def sealing_keys(database_url: str) -> Counter[str]:
    """Key id → how many stored ciphertexts it sealed, read from the raw columns."""
    sealed: Counter[str] = Counter()
    async with opened(database_url, generate_key()) as store:
        for table, column in SEALED_COLUMNS:
            rows = await store.db.fetch(
                f"SELECT {column} AS token FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608
            )
            for row in rows:
                prefix, kid, _ = row["token"].split(".")
                assert prefix == "ag1"
                sealed[kid] += 1
    return sealed


async def rotate(env: dict[str, str], *extra: str) -> CliResult:
    return await run_cli(env, "keys", "rotate", *extra)


def summary(reencrypted: int, key: bytes, skipped: int = 0) -> str:
    return f"re-encrypted {reencrypted} values under key {key_id(key)}; {skipped} skipped\n"


def assert_no_secret(result: CliResult) -> None:
    output = result.stdout + result.stderr
    for secret in (
        CLIENT_SECRET,
        VARIABLE_SECRET,
        WEBHOOK_SECRET,
        HMAC_KEY,
        *(token_for(i) for i in range(CONNECTIONS)),
    ):
        assert secret not in output


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """A bounded poll of a condition another process brings about."""
    for _ in range(1000):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# --- the command on both stores ------------------------------------------------------------


async def test_rotation_moves_every_secret_to_the_new_key(
    tmp_path: Path, database_url: str
) -> None:
    key_a, key_b = generate_key(), generate_key()
    await seed(database_url, key_a)
    async with opened(database_url, key_a) as store:
        before = await everything(store)
    assert await sealing_keys(database_url) == {key_id(key_a): SEALED_VALUES}

    env = operator_env(tmp_path, database_url, key_b, key_a)
    # A small batch size makes the run page through every table.
    result = await rotate(env, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == summary(SEALED_VALUES, key_b)
    assert_no_secret(result)

    assert await sealing_keys(database_url) == {key_id(key_b): SEALED_VALUES}
    async with opened(database_url, key_b) as store:
        assert await everything(store) == before

    again = await rotate(env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == summary(0, key_b)


async def test_a_rerun_finishes_what_an_earlier_run_left(tmp_path: Path, database_url: str) -> None:
    """Progress is the data itself: half the values already under B (as an interrupted
    run leaves them) and the next run rewrites exactly the other half."""
    key_a, key_b = generate_key(), generate_key()
    await seed(database_url, key_a)
    async with opened(database_url, key_b, key_a) as store:
        environment = await prod(store)
        for index in range(0, CONNECTIONS, 2):
            connection = await store.get_connection(environment.id, "oauth", f"user-{index}")
            assert connection is not None
            rewritten = await store.update_credentials(
                connection, connection.credentials, expected_version=connection.version
            )
            assert rewritten is not None
        before = await everything(store)
    done = CONNECTIONS // 2
    assert await sealing_keys(database_url) == {
        key_id(key_a): SEALED_VALUES - done,
        key_id(key_b): done,
    }

    result = await rotate(operator_env(tmp_path, database_url, key_b, key_a))
    assert result.returncode == 0, result.stderr
    assert result.stdout == summary(SEALED_VALUES - done, key_b)
    assert await sealing_keys(database_url) == {key_id(key_b): SEALED_VALUES}
    async with opened(database_url, key_b) as store:
        assert await everything(store) == before


async def test_writes_during_rotation_are_kept(tmp_path: Path, database_url: str) -> None:
    """A server (keyring "B,A") keeps updating one connection while the command runs;
    its last write is what is stored afterwards, under B."""
    key_a, key_b = generate_key(), generate_key()
    await seed(database_url, key_a)
    rotation = spawn(rotate(operator_env(tmp_path, database_url, key_b, key_a)), name="rotation")
    writes = 0
    async with opened(database_url, key_b, key_a) as server:
        environment = await prod(server)
        latest: dict[str, Any] = {}
        while not rotation.done() or writes == 0:
            connection = await server.get_connection(environment.id, "oauth", "user-3")
            assert connection is not None
            latest = {"type": "OAUTH2", "access_token": f"written-during-rotation-{writes}"}
            updated = await server.update_credentials(
                connection, latest, expected_version=connection.version
            )
            assert updated is not None  # the rotation never bumps the version
            writes += 1
    result = await rotation
    assert result.returncode == 0, result.stderr
    assert await sealing_keys(database_url) == {key_id(key_b): SEALED_VALUES}
    async with opened(database_url, key_b) as store:
        stored = await store.get_connection(environment.id, "oauth", "user-3")
        assert stored is not None
        assert stored.credentials == latest


async def test_values_no_key_opens_are_counted_and_fail_the_run(
    tmp_path: Path, database_url: str
) -> None:
    key_a, key_b, lost = generate_key(), generate_key(), generate_key()
    await seed(database_url, key_a)
    async with opened(database_url, lost) as store:
        environment = await prod(store)
        await store.set_environment_variable(environment.id, "ORPHAN", "sealed-under-a-lost-key")

    result = await rotate(operator_env(tmp_path, database_url, key_b, key_a))
    assert result.returncode == 1
    assert result.stdout == summary(SEALED_VALUES, key_b, skipped=1)
    assert "still under an older key" in result.stderr
    assert "sealed-under-a-lost-key" not in result.stdout + result.stderr
    assert_no_secret(result)
    assert await sealing_keys(database_url) == {key_id(key_b): SEALED_VALUES, key_id(lost): 1}


async def test_an_unreachable_store_exits_3_without_the_dsn(tmp_path: Path) -> None:
    url = "postgresql://postgres:hunter2-db-password@127.0.0.1:9/test"
    result = await rotate(operator_env(tmp_path, url, generate_key()))
    assert result.returncode == 3
    assert "PostgreSQL database is unreachable" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


# --- PostgreSQL: a run held at a row lock, then released or killed --------------------------


@contextlib.asynccontextmanager
async def row_locked(url: str, connection: Connection) -> AsyncIterator[asyncpg.Connection]:
    """Hold a lock on one connection row; the rotation blocks when it reaches that row."""
    holder = await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM connections WHERE id = $1 FOR UPDATE", connection.id
            )
            yield holder
    finally:
        await holder.close()


async def blocked_by(holder: asyncpg.Connection) -> list[int]:
    """The server processes waiting for a lock `holder` holds. pg_locks, not
    pg_stat_activity: the latter is a snapshot frozen for the rest of a transaction."""
    rows = await holder.fetch(
        "SELECT DISTINCT pid FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))",
        holder.get_server_pid(),
    )
    return [int(row["pid"]) for row in rows]


async def rotation_blocked(holder: asyncpg.Connection) -> None:
    async def blocked() -> bool:
        return bool(await blocked_by(holder))

    await wait_for(blocked, "the rotation to reach the locked row")


async def rotation_process(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authgate",
        "keys",
        "rotate",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def connections_by_id(database_url: str, key: bytes) -> list[Connection]:
    async with opened(database_url, key) as store:
        found = await store.list_connections((await prod(store)).id, limit=1000)
    return sorted(found, key=lambda connection: connection.id)


async def test_a_write_racing_the_rotation_wins_deterministically(
    tmp_path: Path, postgres_url: str
) -> None:
    """The rotation reads a batch, then is held at row 2; meanwhile a server rewrites row
    5 (whose old ciphertext the rotation already read). Its compare-and-set must then
    leave row 5 alone: without it, the old value would overwrite the new one."""
    key_a, key_b = generate_key(), generate_key()
    await seed(postgres_url, key_a)
    rows = await connections_by_id(postgres_url, key_a)
    target = rows[5]
    fresh = {"type": "OAUTH2", "access_token": "written-while-rotation-was-held"}
    env = operator_env(tmp_path, postgres_url, key_b, key_a)
    rotation: asyncio.Task[CliResult] | None = None
    try:
        async with row_locked(postgres_url, rows[2]) as holder:
            rotation = spawn(rotate(env), name="rotation")
            await rotation_blocked(holder)
            async with opened(postgres_url, key_b, key_a) as server:
                written = await server.update_credentials(
                    target, fresh, expected_version=target.version
                )
                assert written is not None
    finally:
        if rotation is not None:
            result = await rotation
    assert result.returncode == 0, result.stderr
    # Row 5 was already under B when the rotation reached it: not counted.
    assert result.stdout == summary(SEALED_VALUES - 1, key_b)
    assert await sealing_keys(postgres_url) == {key_id(key_b): SEALED_VALUES}
    async with opened(postgres_url, key_b) as store:
        stored = await store.get_connection(target.environment_id, "oauth", target.connection_id)
        assert stored is not None
        assert stored.credentials == fresh
        assert stored.version == target.version + 1


async def test_a_killed_run_is_finished_by_the_next(tmp_path: Path, postgres_url: str) -> None:
    key_a, key_b = generate_key(), generate_key()
    await seed(postgres_url, key_a)
    before = await connections_by_id(postgres_url, key_a)
    env = operator_env(tmp_path, postgres_url, key_b, key_a)
    held = 3
    async with row_locked(postgres_url, before[held]) as holder:
        process = await rotation_process(env)
        try:
            await rotation_blocked(holder)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.communicate()
        # The killed client's statement would still run once the lock goes; end it too.
        for pid in await blocked_by(holder):
            await holder.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def released() -> bool:
            return not await blocked_by(holder)

        await wait_for(released, "the killed rotation's server process to end")

    # The interrupted run rewrote the rows before the held one, and nothing after it.
    assert await sealing_keys(postgres_url) == {
        key_id(key_b): held,
        key_id(key_a): SEALED_VALUES - held,
    }
    result = await rotate(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == summary(SEALED_VALUES - held, key_b)
    assert await sealing_keys(postgres_url) == {key_id(key_b): SEALED_VALUES}
    after = await connections_by_id(postgres_url, key_b)
    assert [c.credentials for c in after] == [c.credentials for c in before]
