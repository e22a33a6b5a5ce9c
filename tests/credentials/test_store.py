"""The durable store on both SQLite and PostgreSQL (see conftest: every test runs twice).

Tests talk to real databases and read raw columns where the point is what is stored.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from credentials.crypto import Keyring, generate_key, key_id
from credentials.database import Database, UniqueViolation, open_database
from credentials.migrations import MIGRATIONS, applied_versions, migrate
from credentials.models import Connection, Environment, Integration
from credentials.secret_keys import generate_secret_key, hash_secret_key
from credentials.store import (
    AlreadyExists,
    ChangeEvent,
    CredentialsUnreadable,
    NotFound,
    SqlStore,
)
from tests.credentials.conftest import FakeClock

SECRET = "ghs_TopSecretAccessToken_0123456789"
CLIENT_SECRET = "oauth-client-secret-do-not-leak"


# --- helpers -----------------------------------------------------------------------------


async def make_integration(
    store: SqlStore, environment: Environment, unique_key: str = "github", **extra: Any
) -> Integration:
    return await store.create_integration(
        environment.id,
        unique_key=unique_key,
        provider=extra.pop("provider", "github"),
        display_name=extra.pop("display_name", None),
        forward_webhooks=extra.pop("forward_webhooks", True),
        credentials=extra.pop("credentials", None),
        custom=extra.pop("custom", None),
    )


async def make_connection(
    store: SqlStore,
    integration: Integration,
    connection_id: str = "user-1",
    *,
    secret: str = SECRET,
    **extra: Any,
) -> Connection:
    return await store.upsert_connection(
        integration.environment_id,
        integration,
        connection_id=connection_id,
        credentials={"type": "OAUTH2", "access_token": secret},
        **extra,
    )


async def raw_connection_column(store: SqlStore, connection: Connection, column: str) -> Any:
    # Column names are test constants; rows are located by parameter.
    return await store.db.fetchval(
        f"SELECT {column} FROM connections WHERE id = $1",  # noqa: S608
        connection.id,
    )


def ids(connections: list[Connection]) -> list[str]:
    return [connection.connection_id for connection in connections]


# --- database layer ----------------------------------------------------------------------


async def test_open_database_creates_sqlite_parent_directories(tmp_path: Any) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    db = await open_database(f"sqlite:///{path}")
    try:
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()
    assert path.exists()


async def test_sqlite_refuses_database_calls_that_would_deadlock_a_transaction() -> None:
    db = await open_database("sqlite:///:memory:")
    try:
        with pytest.raises(RuntimeError, match="transaction handle"):
            await _query_db_inside_its_own_transaction(db)
        assert await db.fetchval("SELECT 2") == 2  # the lock was released
    finally:
        await db.close()


async def _query_db_inside_its_own_transaction(db: Database) -> None:
    async with db.transaction():
        await db.fetchval("SELECT 1")


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://relative-without-third-slash"])
async def test_open_database_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        await open_database(url)


async def test_placeholders_bind_in_order_and_skip_quoted_text(store: SqlStore) -> None:
    row = await store.db.fetchrow("SELECT $2 AS b, '$1' AS literal, $1 AS a, $2 AS again", "x", "y")
    assert row == {"b": "y", "literal": "$1", "a": "x", "again": "y"}


async def test_unique_violations_are_translated(store: SqlStore) -> None:
    insert = "INSERT INTO environments (name, created_at) VALUES ($1, 0)"
    assert await store.db.execute(insert, "dup") == 1
    with pytest.raises(UniqueViolation):
        await store.db.execute(insert, "dup")


_INSERT_ENVIRONMENT = "INSERT INTO environments (name, created_at) VALUES ($1, 0)"


async def _insert_in_one_transaction(db: Database, *names: str) -> None:
    async with db.transaction() as tx:
        for name in names:
            await tx.execute(_INSERT_ENVIRONMENT, name)


async def test_transaction_commits_or_rolls_back_as_a_unit(store: SqlStore) -> None:
    with pytest.raises(UniqueViolation):
        await _insert_in_one_transaction(store.db, "first", "other", "first")
    assert await store.list_environments() == []
    async with store.db.transaction() as tx:
        await tx.execute(_INSERT_ENVIRONMENT, "second")
        assert await tx.fetchval("SELECT COUNT(*) FROM environments WHERE name = $1", "second")
    assert await store.get_environment("second") is not None


async def test_read_then_write_transactions_from_two_connections_both_commit(
    database_url: str, store: SqlStore
) -> None:
    # Two processes' worth of connections. SQLite must take the write lock up front
    # (BEGIN IMMEDIATE); a deferred BEGIN would fail one of them with SQLITE_BUSY.
    first, second = await open_database(database_url), await open_database(database_url)

    async def read_then_write(db: Database, name: str) -> None:
        async with db.transaction() as tx:
            count = await tx.fetchval("SELECT COUNT(*) FROM environments")
            await tx.execute(_INSERT_ENVIRONMENT, f"{name}-{count}")

    try:
        await asyncio.gather(*(read_then_write(db, n) for db, n in [(first, "a"), (second, "b")]))
    finally:
        await first.close()
        await second.close()
    assert len(await store.list_environments()) == 2


async def test_rows_affected_counts_every_row(store: SqlStore) -> None:
    for name in ("a", "b", "c"):
        await store.create_environment(name)
    assert await store.db.execute("UPDATE environments SET created_at = $1", 5) == 3
    assert await store.db.execute("DELETE FROM environments WHERE name = $1", "zzz") == 0


# --- migrations --------------------------------------------------------------------------


async def test_migrations_are_idempotent(store: SqlStore) -> None:
    assert await migrate(store.db) == []
    assert await migrate(store.db) == []
    assert await applied_versions(store.db) == {m.version for m in MIGRATIONS}
    for table in ("environments", "secret_keys", "integrations", "connections"):
        assert await store.db.fetchval(f"SELECT COUNT(*) FROM {table}") == 0  # noqa: S608


async def test_concurrent_migrations_apply_each_version_once(database_url: str) -> None:
    first, second = await open_database(database_url), await open_database(database_url)
    try:
        results = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(results) == [[], [m.version for m in MIGRATIONS]]
        count = await first.fetchval("SELECT COUNT(*) FROM schema_migrations")
        assert count == len(MIGRATIONS)
    finally:
        await first.close()
        await second.close()


# --- environments and secret keys --------------------------------------------------------


async def test_environments(store: SqlStore) -> None:
    dev = await store.create_environment("dev")
    prod = await store.create_environment("prod")
    assert await store.get_environment("dev") == dev
    assert await store.get_environment_by_id(prod.id) == prod
    assert await store.get_environment("staging") is None
    assert await store.list_environments() == [dev, prod]
    with pytest.raises(AlreadyExists):
        await store.create_environment("dev")


async def test_secret_keys_resolve_to_their_environment_until_revoked(store: SqlStore) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    dev_key, prod_key = (
        hash_secret_key(generate_secret_key()),
        hash_secret_key(generate_secret_key()),
    )
    await store.add_secret_key(dev.id, dev_key, "default")
    await store.add_secret_key(prod.id, prod_key)
    assert await store.find_environment_by_key_hash(dev_key) == dev
    assert await store.find_environment_by_key_hash(prod_key) == prod
    assert await store.find_environment_by_key_hash(hash_secret_key(generate_secret_key())) is None
    assert await store.count_secret_keys(dev.id) == 1

    assert await store.revoke_secret_key(dev_key) is True
    assert await store.revoke_secret_key(dev_key) is False
    assert await store.find_environment_by_key_hash(dev_key) is None
    assert await store.count_secret_keys(dev.id) == 0
    assert await store.find_environment_by_key_hash(prod_key) == prod


async def test_a_key_hash_registers_once(store: SqlStore) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    key_hash = hash_secret_key(generate_secret_key())
    await store.add_secret_key(dev.id, key_hash)
    with pytest.raises(AlreadyExists):
        await store.add_secret_key(prod.id, key_hash)
    with pytest.raises(NotFound):
        await store.add_secret_key(dev.id + prod.id + 100, hash_secret_key(generate_secret_key()))


# --- integrations ------------------------------------------------------------------------


async def test_integration_round_trip_with_encrypted_secrets(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    oauth = {"type": "OAUTH2", "client_id": "cid", "client_secret": CLIENT_SECRET, "scopes": "a,b"}
    created = await make_integration(
        store, env, display_name="GitHub", credentials=oauth, custom={"apiKey": "custom-v"}
    )
    assert created.credentials == oauth
    assert created.custom == {"apiKey": "custom-v"}
    assert created.created_at == created.updated_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert await store.get_integration(env.id, "github") == created

    raw = await store.db.fetchrow(
        "SELECT credentials_enc, custom_enc FROM integrations WHERE id = $1", created.id
    )
    assert raw is not None
    assert CLIENT_SECRET not in raw["credentials_enc"]
    assert "custom-v" not in raw["custom_enc"]


async def test_duplicate_integration_key_is_refused_per_environment(store: SqlStore) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    await make_integration(store, dev)
    with pytest.raises(AlreadyExists):
        await make_integration(store, dev, provider="gitlab")
    assert (await make_integration(store, prod)).environment_id == prod.id


async def test_list_integrations_orders_by_provider_then_age(
    store: SqlStore, clock: FakeClock
) -> None:
    env = await store.create_environment("dev")
    for unique_key, provider in [("s2", "slack"), ("g1", "github"), ("s1", "slack")]:
        await make_integration(store, env, unique_key, provider=provider)
        clock.advance(1)
    listed = await store.list_integrations(env.id)
    assert [i.unique_key for i in listed] == ["g1", "s2", "s1"]


async def test_update_integration_changes_only_given_fields(
    store: SqlStore, clock: FakeClock
) -> None:
    env = await store.create_environment("dev")
    original = await make_integration(
        store, env, display_name="GH", credentials={"client_secret": CLIENT_SECRET}
    )
    clock.advance(1000)
    renamed = await store.update_integration(
        env.id, "github", new_unique_key="github-prod", forward_webhooks=False
    )
    assert renamed is not None
    assert (renamed.unique_key, renamed.forward_webhooks) == ("github-prod", False)
    assert renamed.display_name == "GH"
    assert renamed.credentials == original.credentials
    assert renamed.created_at == original.created_at
    assert renamed.updated_at > original.updated_at
    assert await store.get_integration(env.id, "github") is None

    cleared = await store.update_integration(
        env.id, "github-prod", display_name=None, credentials=None
    )
    assert cleared is not None
    assert cleared.display_name is None
    assert cleared.credentials is None
    assert await store.update_integration(env.id, "github-prod") == cleared
    assert await store.update_integration(env.id, "missing", display_name="x") is None


async def test_renaming_onto_a_taken_key_is_refused(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    await make_integration(store, env, "a")
    await make_integration(store, env, "b")
    with pytest.raises(AlreadyExists):
        await store.update_integration(env.id, "a", new_unique_key="b")
    assert await store.get_integration(env.id, "a") is not None


async def test_renamed_integration_keeps_its_connections_readable(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    await make_connection(store, await make_integration(store, env))
    await store.update_integration(env.id, "github", new_unique_key="gh")
    moved = await store.get_connection(env.id, "gh", "user-1")
    assert moved is not None
    assert moved.credentials["access_token"] == SECRET
    assert moved.provider_config_key == "gh"


async def test_delete_integration_cascades_to_connections(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    github, slack = await make_integration(store, env), await make_integration(store, env, "slack")
    await make_connection(store, github, "a")
    await make_connection(store, github, "b")
    await make_connection(store, slack, "a")
    assert await store.delete_integration(env.id, "github") is True
    assert await store.delete_integration(env.id, "github") is False
    assert (
        await store.db.fetchval(
            "SELECT COUNT(*) FROM connections WHERE integration_id = $1", github.id
        )
        == 0
    )
    assert ids(await store.list_connections(env.id)) == ["a"]


# --- connections -------------------------------------------------------------------------


async def test_upsert_inserts_then_overwrites_with_version_bump(
    store: SqlStore, clock: FakeClock
) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    first = await make_connection(
        store, integration, metadata={"a": 1}, tags={"team": "x"}, connection_config={"k": "v"}
    )
    assert first.version == 1
    assert first.provider == "github"
    assert first.created_at == first.updated_at == datetime(2026, 1, 1, tzinfo=UTC)
    clock.advance(60_000)

    second = await make_connection(store, integration, secret="rotated", end_user={"id": "u"})
    assert second.id == first.id
    assert second.version == 2
    assert second.created_at == first.created_at
    assert second.updated_at == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    # Overwrite means overwrite: fields not passed are reset, not merged.
    assert (second.metadata, second.tags, second.connection_config) == (None, {}, {})
    assert second.end_user == {"id": "u"}
    assert await store.get_connection(env.id, "github", "user-1") == second


async def test_credentials_are_not_stored_in_plaintext(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    connection = await make_connection(store, await make_integration(store, env))
    stored = await raw_connection_column(store, connection, "credentials_enc")
    assert isinstance(stored, str)
    assert stored.startswith("ag1.")
    assert SECRET not in stored
    assert "access_token" not in stored
    owner = f"connection:{env.id}:{connection.integration_id}:user-1".encode()
    assert store.keyring.decrypt_json(stored, owner)["access_token"] == SECRET


@pytest.mark.parametrize("target", ["other environment", "same environment, other connection"])
async def test_a_copied_ciphertext_does_not_decrypt_for_another_owner(
    store: SqlStore, target: str
) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    source = await make_connection(store, await make_integration(store, dev))
    token = await raw_connection_column(store, source, "credentials_enc")
    victim_env = prod if target == "other environment" else dev
    victim_integration = (
        await make_integration(store, prod)
        if victim_env is prod
        else await make_integration(store, dev, "github-2")
    )
    copied_id = "user-1" if target == "other environment" else "user-2"
    await store.db.execute(
        "INSERT INTO connections (environment_id, integration_id, connection_id,"
        " credentials_enc, created_at, updated_at) VALUES ($1, $2, $3, $4, 0, 0)",
        victim_env.id,
        victim_integration.id,
        copied_id,
        token,
    )
    with pytest.raises(CredentialsUnreadable) as caught:
        await store.get_connection(victim_env.id, victim_integration.unique_key, copied_id)
    assert copied_id in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_integration_secrets_copied_to_another_environment_do_not_decrypt(
    store: SqlStore,
) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    source = await make_integration(store, dev, credentials={"client_secret": CLIENT_SECRET})
    await make_integration(store, prod)
    await store.db.execute(
        "UPDATE integrations SET credentials_enc ="
        " (SELECT credentials_enc FROM integrations WHERE id = $1) WHERE environment_id = $2",
        source.id,
        prod.id,
    )
    with pytest.raises(CredentialsUnreadable, match="integration 'github'"):
        await store.get_integration(prod.id, "github")


async def test_environments_are_isolated(store: SqlStore) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    dev_key = hash_secret_key(generate_secret_key())
    await store.add_secret_key(dev.id, dev_key)
    dev_github = await make_integration(store, dev)
    prod_github = await make_integration(store, prod)
    await make_integration(store, prod, "prod-only")
    await make_connection(store, dev_github, "shared-id", secret="dev-secret")
    await make_connection(store, prod_github, "shared-id", secret="prod-secret")
    await make_connection(store, prod_github, "prod-user", secret="prod-secret-2")

    resolved = await store.find_environment_by_key_hash(dev_key)
    assert resolved == dev
    assert [i.unique_key for i in await store.list_integrations(resolved.id)] == ["github"]
    assert await store.get_integration(resolved.id, "prod-only") is None
    visible = await store.list_connections(resolved.id)
    assert [(c.connection_id, c.credentials["access_token"]) for c in visible] == [
        ("shared-id", "dev-secret")
    ]
    assert await store.get_connection(resolved.id, "github", "prod-user") is None
    assert await store.delete_connection(resolved.id, "github", "prod-user") is False
    assert await store.update_connection_fields(resolved.id, "github", "prod-user", tags={}) is None
    assert await store.delete_integration(resolved.id, "prod-only") is False
    assert len(await store.list_connections(prod.id)) == 2


async def test_upsert_refuses_an_integration_of_another_environment(store: SqlStore) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    prod_github = await make_integration(store, prod)
    with pytest.raises(NotFound):
        await store.upsert_connection(
            dev.id, prod_github, connection_id="x", credentials={"type": "NONE"}
        )


async def test_upsert_after_the_integration_was_deleted_is_not_found(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    await store.delete_integration(env.id, "github")
    with pytest.raises(NotFound):
        await make_connection(store, integration)


async def test_compare_and_set_refuses_a_stale_version(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    stale = await make_connection(store, await make_integration(store, env))
    fresh = await store.update_credentials(
        stale, {"type": "OAUTH2", "access_token": "new", "refresh_token": "r2"}, expected_version=1
    )
    assert fresh is not None
    assert fresh.version == 2
    assert fresh.credentials["refresh_token"] == "r2"

    lost = await store.update_credentials(
        stale,
        {"type": "OAUTH2", "access_token": "older", "refresh_token": "r1"},
        expected_version=stale.version,
    )
    assert lost is None
    current = await store.get_connection(env.id, "github", "user-1")
    assert current == fresh


async def test_compare_and_set_race_has_exactly_one_winner(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    connection = await make_connection(store, await make_integration(store, env))
    writes = [
        store.update_credentials(connection, {"access_token": f"t{n}"}, expected_version=1)
        for n in range(5)
    ]
    results = await asyncio.gather(*writes)
    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    assert winners[0].version == 2
    assert await store.get_connection(env.id, "github", "user-1") == winners[0]


async def test_compare_and_set_can_update_connection_config_too(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    connection = await make_connection(
        store, await make_integration(store, env), connection_config={"app_id": "1"}
    )
    updated = await store.update_credentials(
        connection,
        {"access_token": "x"},
        expected_version=1,
        connection_config={"app_id": "1", "jwtToken": "j"},
    )
    assert updated is not None
    assert updated.connection_config["jwtToken"] == "j"


async def test_update_connection_fields_leaves_credentials_and_version(
    store: SqlStore, clock: FakeClock
) -> None:
    env = await store.create_environment("dev")
    original = await make_connection(
        store, await make_integration(store, env), metadata={"m": 1}, tags={"a": "1"}
    )
    clock.advance(5)
    updated = await store.update_connection_fields(
        env.id, "github", "user-1", tags={"b": "2"}, end_user={"id": "e"}
    )
    assert updated is not None
    assert (updated.tags, updated.end_user, updated.metadata) == ({"b": "2"}, {"id": "e"}, {"m": 1})
    assert updated.version == original.version
    assert updated.credentials == original.credentials
    assert updated.updated_at is not None
    assert original.updated_at is not None
    assert updated.updated_at > original.updated_at

    cleared = await store.update_connection_fields(env.id, "github", "user-1", metadata=None)
    assert cleared is not None
    assert cleared.metadata is None
    assert cleared.tags == {"b": "2"}
    assert await store.update_connection_fields(env.id, "github", "user-1") == cleared
    assert await store.update_connection_fields(env.id, "github", "nobody", metadata={}) is None


async def test_webhook_url_override_round_trip(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    created = await make_connection(
        store, integration, webhook_url_override="https://hooks.example.com/a"
    )
    assert created.webhook_url_override == "https://hooks.example.com/a"
    reread = await store.get_connection(env.id, "github", "user-1")
    assert reread is not None
    assert reread.webhook_url_override == "https://hooks.example.com/a"
    # Fields updates: UNCHANGED keeps it, a value replaces it, "" and None clear it.
    kept = await store.update_connection_fields(env.id, "github", "user-1", tags={"t": "1"})
    assert kept is not None
    assert kept.webhook_url_override == "https://hooks.example.com/a"
    for value, stored in (("https://b.example.com/", "https://b.example.com/"), ("", None)):
        updated = await store.update_connection_fields(
            env.id, "github", "user-1", webhook_url_override=value
        )
        assert updated is not None
        assert updated.webhook_url_override == stored
        assert await raw_connection_column(store, updated, "webhook_url_override") == stored
    await store.update_connection_fields(env.id, "github", "user-1", webhook_url_override="x")
    cleared = await store.update_connection_fields(
        env.id, "github", "user-1", webhook_url_override=None
    )
    assert cleared is not None
    assert cleared.webhook_url_override is None
    # An upsert overwrites it like every other field; "" is stored as no override.
    await make_connection(store, integration, webhook_url_override="https://c.example.com/")
    overwritten = await make_connection(store, integration, webhook_url_override="")
    assert overwritten.webhook_url_override is None
    assert await raw_connection_column(store, overwritten, "webhook_url_override") is None
    [listed] = await store.list_connections(env.id, include_credentials=False)
    assert listed.webhook_url_override is None


async def metadata_of(store: SqlStore, env: Environment, connection_id: str) -> Any:
    connection = await store.get_connection(env.id, "github", connection_id)
    assert connection is not None
    return connection.metadata


async def test_write_metadata_replaces_or_merges_shallowly(
    store: SqlStore, clock: FakeClock
) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    original = await make_connection(
        store, integration, "a", metadata={"keep": 1, "nested": {"x": 1, "y": 2}}
    )
    await make_connection(store, integration, "b", metadata=None)
    await make_connection(store, integration, "c", metadata={"untouched": True})
    clock.advance(60_000)
    missing = await store.write_metadata(
        env.id, "github", ["a", "b"], {"nested": {"z": 3}, "new": None}, merge=True
    )
    assert missing == []
    assert await metadata_of(store, env, "a") == {"keep": 1, "nested": {"z": 3}, "new": None}
    assert await metadata_of(store, env, "b") == {"nested": {"z": 3}, "new": None}
    assert await metadata_of(store, env, "c") == {"untouched": True}
    assert await store.write_metadata(env.id, "github", ["a"], {"only": 1}, merge=False) == []
    assert await metadata_of(store, env, "a") == {"only": 1}
    # Metadata writes leave credentials, version and updated_at alone (as Nango does).
    reread = await store.get_connection(env.id, "github", "a")
    assert reread is not None
    assert (reread.version, reread.updated_at) == (original.version, original.updated_at)
    assert reread.credentials == original.credentials


async def test_write_metadata_is_all_or_nothing(store: SqlStore) -> None:
    events: list[ChangeEvent] = []
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    await make_integration(store, env, "other")
    await make_connection(store, integration, "a", metadata={"v": 1})
    await make_connection(store, integration, "b", metadata={"v": 1})
    store.subscribe(events.append)
    for merge in (True, False):
        missing = await store.write_metadata(
            env.id, "github", ["a", "ghost", "b", "phantom", "ghost"], {"v": 2}, merge=merge
        )
        assert missing == ["ghost", "phantom"]  # in the order given, once each
    assert await store.write_metadata(env.id, "other", ["a"], {"v": 2}, merge=True) == ["a"]
    assert await store.write_metadata(env.id + 1, "github", ["a"], {"v": 2}, merge=True) == ["a"]
    assert await metadata_of(store, env, "a") == {"v": 1}
    assert await metadata_of(store, env, "b") == {"v": 1}
    assert events == []  # nothing written, nothing to invalidate
    assert await store.write_metadata(env.id, "github", ["b", "a", "b"], {"v": 3}, merge=True) == []
    assert events == [
        ChangeEvent("connection", env.id, "github", "b"),
        ChangeEvent("connection", env.id, "github", "a"),
    ]
    assert await store.write_metadata(env.id, "github", [], {"v": 4}, merge=False) == []


async def test_write_metadata_for_more_ids_than_one_statement_can_bind(store: SqlStore) -> None:
    """PostgreSQL binds at most 32767 parameters per statement: a bulk write of more ids
    must still work (and still be all or nothing)."""
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    count = 33_000
    # Rows written straight in SQL for speed; metadata writes never decrypt credentials.
    await store.db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)"
        " INSERT INTO connections (environment_id, integration_id, connection_id,"
        " credentials_enc, metadata, created_at, updated_at)"
        " SELECT $2, $3, 'bulk-' || i, 'unused', '{\"n\": 1}', 0, 0 FROM n",
        count,
        env.id,
        integration.id,
    )
    names = [f"bulk-{index}" for index in range(1, count + 1)]

    async def rows_with(metadata: str) -> int:
        found: int = await store.db.fetchval(
            "SELECT COUNT(*) FROM connections WHERE metadata = $1", metadata
        )
        return found

    missing = await store.write_metadata(
        env.id, "github", [*names, "ghost"], {"bulk": 1}, merge=False
    )
    assert missing == ["ghost"]
    assert await rows_with('{"n":1}') == 0  # orjson's form: nothing was rewritten
    assert await store.write_metadata(env.id, "github", names, {"bulk": 1}, merge=False) == []
    assert await rows_with('{"bulk":1}') == count
    merged = names[:1203]
    assert await store.write_metadata(env.id, "github", merged, {"m": 2}, merge=True) == []
    assert await rows_with('{"bulk":1,"m":2}') == 1203
    assert await rows_with('{"bulk":1}') == count - 1203


async def test_concurrent_metadata_merges_lose_nothing(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    for name in ("a", "b", "c"):
        await make_connection(store, integration, name, metadata={})

    async def merge(index: int) -> list[str]:
        # Overlapping sets in different orders: the lock order must be global.
        targets = ["a", "b", "c"] if index % 2 else ["c", "b", "a"]
        return await store.write_metadata(
            env.id, "github", targets, {f"k{index}": index}, merge=True
        )

    assert await asyncio.gather(*(merge(index) for index in range(30))) == [[]] * 30
    expected = {f"k{index}": index for index in range(30)}
    for name in ("a", "b", "c"):
        assert await metadata_of(store, env, name) == expected


async def test_touch_last_fetched(store: SqlStore, clock: FakeClock) -> None:
    env = await store.create_environment("dev")
    connection = await make_connection(store, await make_integration(store, env))
    assert connection.last_fetched_at is None
    clock.advance(1234)
    stamped = await store.touch_last_fetched(connection)
    reread = await store.get_connection(env.id, "github", "user-1")
    assert reread is not None
    assert reread.last_fetched_at == stamped
    assert stamped == datetime(2026, 1, 1, 0, 0, 1, 234000, tzinfo=UTC)


async def test_delete_connection(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    await make_connection(store, integration, "a")
    await make_connection(store, integration, "b")
    assert await store.delete_connection(env.id, "github", "a") is True
    assert await store.delete_connection(env.id, "github", "a") is False
    assert await store.delete_connection(env.id, "other", "b") is False
    assert ids(await store.list_connections(env.id)) == ["b"]


async def test_json_round_trip(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env, custom={"ключ": "значение 🔐"})
    payload = {
        "text": "naïve café 東京 🚀 \u0000-free \\ \"quoted\" 'single'",
        "nested": {"list": [1, 2.5, None, True, False, {"deep": ["x"]}], "empty": {}},
        "max_i64": 2**63 - 1,
        "min_i64": -(2**63),
        "two_to_63": 2**63,
    }
    stored = await store.upsert_connection(
        env.id,
        integration,
        connection_id="ユーザー/1 with spaces",
        credentials=payload,
        connection_config=payload,
        metadata=payload,
        tags={"émoji": "✓"},
        end_user=payload,
    )
    fetched = await store.get_connection(env.id, "github", "ユーザー/1 with spaces")
    assert fetched == stored
    assert fetched.credentials == fetched.connection_config == fetched.metadata == payload
    assert fetched.end_user == payload
    assert fetched.tags == {"émoji": "✓"}
    reread = await store.get_integration(env.id, "github")
    assert reread is not None
    assert reread.custom == {"ключ": "значение 🔐"}


# --- listing -----------------------------------------------------------------------------


async def _listing_fixture(store: SqlStore, clock: FakeClock) -> Environment:
    env = await store.create_environment("dev")
    github, slack = await make_integration(store, env), await make_integration(store, env, "slack")
    rows: list[tuple[Integration, str, dict[str, Any] | None, dict[str, str]]] = [
        (
            github,
            "Alpha-User",
            {
                "id": "u1",
                "display_name": "ZOË MÜLLER",
                "email": "zoe@example.com",
                "organization": {"id": "org-1"},
            },
            {"team": "core"},
        ),
        (github, "beta_user", {"id": "u2", "email": "BOB@Example.org"}, {"team": "edge"}),
        (slack, "gamma%", None, {"team": "core", "tier": "gold"}),
        (slack, "Alpha-User", {"id": "u3"}, {}),
        (github, "delta", None, {}),
    ]
    for integration, connection_id, end_user, tags in rows:
        await make_connection(store, integration, connection_id, end_user=end_user, tags=tags)
        clock.advance(10)
    return env


async def test_list_is_newest_first_and_paginates(store: SqlStore, clock: FakeClock) -> None:
    env = await _listing_fixture(store, clock)
    everything = await store.list_connections(env.id)
    assert [(c.provider_config_key, c.connection_id) for c in everything] == [
        ("github", "delta"),
        ("slack", "Alpha-User"),
        ("slack", "gamma%"),
        ("github", "beta_user"),
        ("github", "Alpha-User"),
    ]
    pages = [await store.list_connections(env.id, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [ids(page) for page in pages] == [
        ["delta", "Alpha-User"],
        ["gamma%", "beta_user"],
        ["Alpha-User"],
        [],
    ]


async def test_list_breaks_created_at_ties_by_id(store: SqlStore) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(store, env)
    for connection_id in ("first", "second", "third"):
        await make_connection(store, integration, connection_id)  # the clock does not move
    assert ids(await store.list_connections(env.id)) == ["third", "second", "first"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"provider_config_key": "slack"}, ["Alpha-User", "gamma%"]),
        (
            {"provider_config_key": ["slack", "github"]},
            ["delta", "Alpha-User", "gamma%", "beta_user", "Alpha-User"],
        ),
        ({"provider_config_key": []}, []),
        ({"provider_config_key": "unknown"}, []),
        ({"connection_id": "Alpha-User"}, ["Alpha-User", "Alpha-User"]),
        ({"connection_id": "alpha-user"}, []),
        ({"search": "ALPHA"}, ["Alpha-User", "Alpha-User"]),
        ({"search": "zoë m"}, ["Alpha-User"]),  # end user display name, Unicode case folding
        ({"search": "example.ORG"}, ["beta_user"]),  # end user email
        ({"search": "_"}, ["beta_user"]),  # LIKE wildcards are literal
        ({"search": "%"}, ["gamma%"]),
        ({"end_user_id": "u1"}, ["Alpha-User"]),
        ({"end_user_organization_id": "org-1"}, ["Alpha-User"]),
        ({"tags": {"team": "core"}}, ["gamma%", "Alpha-User"]),
        ({"tags": {"team": "core", "tier": "gold"}}, ["gamma%"]),
        ({"tags": {"team": "gold"}}, []),
        ({"provider_config_key": "github", "search": "user"}, ["beta_user", "Alpha-User"]),
    ],
)
async def test_list_filters(
    store: SqlStore, clock: FakeClock, filters: dict[str, Any], expected: list[str]
) -> None:
    env = await _listing_fixture(store, clock)
    assert ids(await store.list_connections(env.id, **filters)) == expected


async def test_list_without_credentials_survives_an_unreadable_row(
    store: SqlStore, clock: FakeClock
) -> None:
    env = await store.create_environment("dev")
    await make_connection(store, await make_integration(store, env))
    other = SqlStore(store.db, Keyring([generate_key()]), clock=clock)
    with pytest.raises(CredentialsUnreadable):
        await other.list_connections(env.id)
    listed = await other.list_connections(env.id, include_credentials=False)
    assert ids(listed) == ["user-1"]
    assert listed[0].credentials == {}


# --- environment variables ---------------------------------------------------------------


async def test_environment_variables(store: SqlStore) -> None:
    dev, prod = await store.create_environment("dev"), await store.create_environment("prod")
    await store.set_environment_variable(dev.id, "B_TOKEN", "first")
    await store.set_environment_variable(dev.id, "A_URL", "https://x.example")
    await store.set_environment_variable(dev.id, "B_TOKEN", "überschrieben")
    await store.set_environment_variable(prod.id, "B_TOKEN", "prod")
    assert await store.list_environment_variables(dev.id) == [
        ("A_URL", "https://x.example"),
        ("B_TOKEN", "überschrieben"),
    ]
    raw = await store.db.fetch("SELECT value_enc FROM environment_variables")
    assert all("überschrieben" not in row["value_enc"] for row in raw)
    assert await store.delete_environment_variable(dev.id, "B_TOKEN") is True
    assert await store.delete_environment_variable(dev.id, "B_TOKEN") is False
    assert await store.list_environment_variables(dev.id) == [("A_URL", "https://x.example")]
    assert await store.list_environment_variables(prod.id) == [("B_TOKEN", "prod")]


# --- change events -----------------------------------------------------------------------


async def test_committed_writes_notify_listeners(store: SqlStore) -> None:
    events: list[ChangeEvent] = []
    store.subscribe(events.append)
    env = await store.create_environment("dev")
    key = hash_secret_key(generate_secret_key())
    await store.add_secret_key(env.id, key)
    integration = await make_integration(store, env)
    with pytest.raises(AlreadyExists):
        await make_integration(store, env)  # a failed write notifies nobody
    connection = await make_connection(store, integration)
    updated = await store.update_credentials(connection, {"x": 1}, expected_version=1)
    assert updated is not None
    assert await store.update_credentials(connection, {"x": 2}, expected_version=1) is None
    await store.update_connection_fields(env.id, "github", "user-1", metadata={"m": 1})
    await store.touch_last_fetched(connection)  # bookkeeping only: no event
    await store.delete_connection(env.id, "github", "user-1")
    await store.delete_connection(env.id, "github", "user-1")  # nothing deleted: no event
    await store.update_integration(env.id, "github", new_unique_key="gh")
    await store.delete_integration(env.id, "gh")
    await store.revoke_secret_key(key)

    e = env.id
    assert events == [
        ChangeEvent("environment", e),
        ChangeEvent("secret_key", e),
        ChangeEvent("integration", e, "github"),
        ChangeEvent("connection", e, "github", "user-1"),
        ChangeEvent("connection", e, "github", "user-1"),
        ChangeEvent("connection", e, "github", "user-1"),
        ChangeEvent("connection", e, "github", "user-1"),
        ChangeEvent("integration", e, "github"),
        ChangeEvent("integration", e, "gh"),
        ChangeEvent("integration", e, "gh"),
        ChangeEvent("secret_key", e),
    ]


async def test_a_failing_listener_does_not_fail_the_write(store: SqlStore) -> None:
    seen: list[ChangeEvent] = []

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("cache exploded")

    store.subscribe(broken)
    store.subscribe(seen.append)
    env = await store.create_environment("dev")
    assert seen == [ChangeEvent("environment", env.id)]
    store.unsubscribe(broken)


def test_change_event_serialises_small() -> None:
    event = ChangeEvent("connection", 7, "github", "user-1")
    assert ChangeEvent.from_json(event.to_json()) == event
    assert (
        ChangeEvent.from_json(ChangeEvent("environment", 1).to_json()).provider_config_key is None
    )


# --- key rotation ------------------------------------------------------------------------


async def test_reencrypt_all_moves_every_secret_to_the_primary_key(
    store: SqlStore, clock: FakeClock, encryption_key: bytes
) -> None:
    env = await store.create_environment("dev")
    integration = await make_integration(
        store, env, credentials={"client_secret": CLIENT_SECRET}, custom={"k": "v"}
    )
    for n in range(3):
        await make_connection(store, integration, f"user-{n}")
    await store.set_environment_variable(env.id, "V", "value")

    new_key = generate_key()
    rotated = SqlStore(store.db, Keyring([new_key, encryption_key]), clock=clock)
    assert await rotated.reencrypt_all(batch_size=2) == 3 + 2 + 1
    assert await rotated.reencrypt_all() == 0

    only_new = SqlStore(store.db, Keyring([new_key]), clock=clock)
    assert len(await only_new.list_connections(env.id)) == 3
    reread = await only_new.get_integration(env.id, "github")
    assert reread is not None
    assert reread.credentials == {"client_secret": CLIENT_SECRET}
    assert await only_new.list_environment_variables(env.id) == [("V", "value")]
    tokens = await store.db.fetch("SELECT credentials_enc FROM connections")
    assert {row["credentials_enc"].split(".")[1] for row in tokens} == {key_id(new_key)}
