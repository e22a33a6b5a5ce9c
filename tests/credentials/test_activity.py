"""The activity log's writer and storage, on SQLite and PostgreSQL.

Entries are queued synchronously and written by the background task; tests wait on
`flush()`, which returns once everything queued before it has reached the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from credentials.activity import (
    DAY_MS,
    ActivityEntry,
    ActivityLog,
    ActivityQuery,
    ActivitySettings,
    list_activity,
    prune_activity,
)
from credentials.config import ConfigError
from credentials.crypto import Keyring
from credentials.migrations import MIGRATIONS
from credentials.models import Environment
from credentials.store import SqlStore, open_store
from tests.credentials.conftest import POSTGRES_URL, FakeClock, with_search_path
from tests.tcp_relay import TcpRelay

SETTINGS = ActivitySettings(prune_interval=3600.0)


def entry(environment: Environment, number: int = 0, **changes: object) -> ActivityEntry:
    base = ActivityEntry(
        environment_id=environment.id,
        provider_config_key="github",
        connection_id="conn-1",
        activity_log_id=None,
        request_id=f"req-{number}",
        method="GET",
        host="api.example.com",
        path=f"/proxy/items/{number}",
        status=200,
        error_code=None,
        upstream_ms=12.5,
        overhead_ms=0.75,
        retries=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def environment(store: SqlStore) -> Environment:
    return await store.create_environment("activity")


@pytest.fixture
async def writer(store: SqlStore, clock: FakeClock) -> AsyncIterator[ActivityLog]:
    activity = ActivityLog(store.db, SETTINGS, clock=clock)
    activity.start()
    try:
        yield activity
    finally:
        await activity.close()


async def rows(store: SqlStore) -> list[dict[str, object]]:
    found = await store.db.fetch("SELECT * FROM activity_log ORDER BY id")
    return [dict(row) for row in found]


def test_migration_4_creates_the_activity_log() -> None:
    assert MIGRATIONS[3].version == 4
    assert any("CREATE TABLE activity_log" in sql for sql in MIGRATIONS[3].statements)


async def test_recorded_entries_reach_the_table_after_flush(
    store: SqlStore, environment: Environment, writer: ActivityLog, clock: FakeClock
) -> None:
    first = entry(environment, 1, activity_log_id="log-a", status=502, error_code="upstream_x")
    assert writer.record(first) is True
    assert writer.record(entry(environment, 2)) is True
    await writer.flush()
    stored = await rows(store)
    assert [row["request_id"] for row in stored] == ["req-1", "req-2"]
    row = stored[0]
    assert row["environment_id"] == environment.id
    assert (row["provider_config_key"], row["connection_id"]) == ("github", "conn-1")
    assert (row["activity_log_id"], row["status"], row["error_code"]) == (
        "log-a",
        502,
        "upstream_x",
    )
    assert (row["method"], row["host"], row["path"]) == ("GET", "api.example.com", "/proxy/items/1")
    assert (row["upstream_ms"], row["overhead_ms"], row["retries"]) == (12.5, 0.75, 0)
    assert row["created_at"] == clock.now_ms
    assert (writer.accepted, writer.written, writer.failed, writer.dropped) == (2, 2, 0, 0)


async def test_flush_with_nothing_queued_returns(writer: ActivityLog) -> None:
    await writer.flush()
    assert writer.settled == 0


@pytest.mark.postgres
async def test_one_insert_per_batch(postgres_schema: str, keyring: Keyring) -> None:
    """Each statement is its own transaction in autocommit, so rows written by one INSERT
    share their `xmin`: five entries in batches of two are three statements."""
    store = await open_store(with_search_path(POSTGRES_URL, postgres_schema), keyring)
    try:
        environment = await store.create_environment("batches")
        activity = ActivityLog(store.db, replace(SETTINGS, batch_size=2))
        for number in range(5):
            activity.record(entry(environment, number))
        activity.start()  # after queueing, so the batches are exactly 2, 2, 1
        await activity.close()
        groups = await store.db.fetch(
            "SELECT xmin::text AS tx, COUNT(*) AS n FROM activity_log GROUP BY xmin::text"
        )
    finally:
        await store.close()
    assert sorted(int(group["n"]) for group in groups) == [1, 2, 2]


async def test_a_full_queue_drops_and_counts_instead_of_waiting(
    store: SqlStore, environment: Environment
) -> None:
    activity = ActivityLog(store.db, replace(SETTINGS, queue_size=3))
    # Not started: nothing drains, so the queue fills up.
    outcomes = [activity.record(entry(environment, number)) for number in range(5)]
    assert outcomes == [True, True, True, False, False]
    assert (activity.accepted, activity.dropped) == (3, 2)
    activity.start()
    await activity.close()
    assert [row["request_id"] for row in await rows(store)] == ["req-0", "req-1", "req-2"]
    assert activity.written == 3


async def test_close_writes_what_is_queued_and_later_entries_are_dropped(
    store: SqlStore, environment: Environment
) -> None:
    activity = ActivityLog(store.db, SETTINGS)
    activity.start()
    activity.record(entry(environment, 1))
    await activity.close()
    assert [row["request_id"] for row in await rows(store)] == ["req-1"]
    assert activity.record(entry(environment, 2)) is False
    assert activity.dropped == 1


async def test_an_entry_of_a_deleted_environment_does_not_cost_the_others(
    store: SqlStore, environment: Environment, writer: ActivityLog
) -> None:
    gone = await store.create_environment("gone")
    await store.db.execute("DELETE FROM environments WHERE id = $1", gone.id)
    writer.record(entry(environment, 1))
    writer.record(entry(gone, 2))
    writer.record(entry(environment, 3))
    await writer.flush()
    assert [row["request_id"] for row in await rows(store)] == ["req-1", "req-3"]
    assert (writer.written, writer.failed) == (2, 1)


# --- retention ---------------------------------------------------------------------------------


async def test_retention_removes_rows_older_than_the_period(
    store: SqlStore, environment: Environment, writer: ActivityLog, clock: FakeClock
) -> None:
    writer.record(entry(environment, 1))
    clock.advance(6 * DAY_MS)
    writer.record(entry(environment, 2))
    await writer.flush()
    clock.advance(DAY_MS + 1)  # entry 1 is now 7 days and 1 ms old, entry 2 one day old
    assert await writer.prune() == 1
    assert [row["request_id"] for row in await rows(store)] == ["req-2"]


async def test_retention_keeps_each_environments_newest_rows_up_to_the_cap(
    store: SqlStore, environment: Environment, writer: ActivityLog
) -> None:
    other = await store.create_environment("other")
    for number in range(5):
        writer.record(entry(environment, number))
    writer.record(entry(other, 10))
    writer.record(entry(other, 11))
    await writer.flush()
    assert await prune_activity(store.db, older_than=0, max_rows_per_environment=3) == 2
    assert [row["request_id"] for row in await rows(store)] == [
        "req-2",
        "req-3",
        "req-4",
        "req-10",
        "req-11",
    ]


async def test_the_writer_applies_retention_by_itself(
    store: SqlStore, environment: Environment, clock: FakeClock
) -> None:
    old = ActivityLog(store.db, SETTINGS, clock=clock)
    old.start()
    old.record(entry(environment, 1))
    await old.close()
    assert len(await rows(store)) == 1
    clock.advance(8 * DAY_MS)
    # A new writer prunes when it starts, then every `prune_interval` seconds.
    activity = ActivityLog(store.db, SETTINGS, clock=clock)
    activity.start()
    try:
        await _until(lambda: store.db.fetchval("SELECT COUNT(*) FROM activity_log"), 0)
    finally:
        await activity.close()


async def _until(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """A bounded poll: the background task's pruning has no other signal to wait on."""
    for _ in range(250):
        if await read() == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still {await read()!r}, expected {expected!r}")


# --- an unreachable database -----------------------------------------------------------------


@pytest.mark.postgres
async def test_an_unreachable_database_costs_entries_not_the_writer(
    postgres_schema: str, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="authgate.activity")
    async with TcpRelay("127.0.0.1", 5432) as relay:
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/test"
        store = await open_store(with_search_path(url, postgres_schema), keyring)
        try:
            environment = await store.create_environment("outage")
            activity = ActivityLog(store.db, SETTINGS)
            activity.start()
            relay.cut()
            activity.record(entry(environment, 1))
            activity.record(entry(environment, 2))
            await activity.flush()
            assert (activity.written, activity.failed) == (0, 2)
            relay.restore()
            activity.record(entry(environment, 3))
            await activity.flush()
            await activity.close()
            assert activity.written == 1
            assert [row["request_id"] for row in await rows(store)] == ["req-3"]
        finally:
            await store.close()
    warnings = [r for r in caplog.records if r.name == "authgate.activity"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "postgresql://" not in warnings[0].getMessage()


# --- listing -------------------------------------------------------------------------------


async def test_listing_filters_and_pages_newest_first(
    store: SqlStore, environment: Environment, writer: ActivityLog, clock: FakeClock
) -> None:
    statuses = [200, 404, 429, 200, 503, 200]
    for number, status in enumerate(statuses):
        group = "grp-a" if number % 2 == 0 else "grp-b"
        writer.record(entry(environment, number, status=status, activity_log_id=group))
        clock.advance(1000)
    writer.record(entry(environment, 99, connection_id="conn-2"))
    writer.record(entry(environment, 98, provider_config_key="gitlab"))
    await writer.flush()
    query = ActivityQuery(provider_config_key="github", connection_id="conn-1")

    async def ids(**changes: object) -> list[str]:
        page = await list_activity(store.db, environment.id, replace(query, **changes))  # type: ignore[arg-type]
        return [record.request_id for record in page.records]

    assert await ids() == ["req-5", "req-4", "req-3", "req-2", "req-1", "req-0"]
    assert await ids(activity_log_id="grp-a") == ["req-4", "req-2", "req-0"]
    assert await ids(status=200) == ["req-5", "req-3", "req-0"]
    assert await ids(status_class=4) == ["req-2", "req-1"]
    assert await ids(status_class=5, activity_log_id="grp-a") == ["req-4"]
    assert await ids(since=1_767_225_600_000 + 3000) == ["req-5", "req-4", "req-3"]
    assert await ids(activity_log_id="nope") == []

    seen: list[str] = []
    cursor: int | None = None
    pages = 0
    while True:
        page = await list_activity(
            store.db, environment.id, replace(query, limit=4, before_id=cursor)
        )
        seen.extend(record.request_id for record in page.records)
        pages += 1
        if page.next_before_id is None:
            break
        cursor = page.next_before_id
    assert (seen, pages) == (["req-5", "req-4", "req-3", "req-2", "req-1", "req-0"], 2)


async def test_listing_sees_only_its_own_environment(
    store: SqlStore, environment: Environment, writer: ActivityLog
) -> None:
    other = await store.create_environment("other")
    writer.record(entry(other, 1))
    await writer.flush()
    query = ActivityQuery(provider_config_key="github", connection_id="conn-1")
    assert (await list_activity(store.db, environment.id, query)).records == []
    assert len((await list_activity(store.db, other.id, query)).records) == 1


async def test_an_exactly_full_page_has_no_next_cursor(
    store: SqlStore, environment: Environment, writer: ActivityLog
) -> None:
    for number in range(3):
        writer.record(entry(environment, number))
    await writer.flush()
    query = ActivityQuery(provider_config_key="github", connection_id="conn-1", limit=3)
    page = await list_activity(store.db, environment.id, query)
    assert (len(page.records), page.next_before_id) == (3, None)


# --- settings ------------------------------------------------------------------------------


def test_settings_default_to_on_for_seven_days() -> None:
    settings = ActivitySettings.from_env({})
    assert (settings.enabled, settings.retention_days) == (True, 7)


def test_settings_read_the_environment() -> None:
    settings = ActivitySettings.from_env(
        {
            "AUTHGATE_ACTIVITY_LOG": "false",
            "AUTHGATE_ACTIVITY_RETENTION_DAYS": "30",
            "AUTHGATE_ACTIVITY_MAX_ROWS": "500",
            "AUTHGATE_ACTIVITY_QUEUE_SIZE": "50",
        }
    )
    assert settings == ActivitySettings(
        enabled=False, retention_days=30, max_rows_per_environment=500, queue_size=50
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHGATE_ACTIVITY_LOG", "maybe"),
        ("AUTHGATE_ACTIVITY_RETENTION_DAYS", "0"),
        ("AUTHGATE_ACTIVITY_RETENTION_DAYS", "seven"),
        ("AUTHGATE_ACTIVITY_MAX_ROWS", "0"),
        ("AUTHGATE_ACTIVITY_QUEUE_SIZE", "-1"),
    ],
)
def test_invalid_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as problem:
        ActivitySettings.from_env({variable: value})
    assert problem.value.variable == variable


def test_a_batch_size_past_the_parameter_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ActivitySettings(batch_size=5000)
