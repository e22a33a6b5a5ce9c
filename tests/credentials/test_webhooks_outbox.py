"""The webhook outbox on both store backends: claims, leases, settling, purging, restarts.

Time is the store's clock (a `FakeClock`), so leases and due times are moved by the
test, never waited for.
"""

from __future__ import annotations

import asyncio

import orjson

from credentials.crypto import Keyring
from credentials.store import SqlStore, open_store
from credentials.webhooks.outbox import WebhookOutbox
from tests.credentials.conftest import FakeClock

BODY = orjson.dumps({"from": "nango", "type": "auth", "operation": "creation"})
LEASE_MS = 60_000
DAY_MS = 86_400_000


async def environment_id(store: SqlStore, name: str = "dev") -> int:
    return (await store.create_environment(name)).id


async def row_state(store: SqlStore, row_id: int) -> dict[str, object]:
    row = await store.db.fetchrow(
        "SELECT attempts, next_attempt_at, claimed_until, last_error, delivered_at, failed_at"
        " FROM webhook_outbox WHERE id = $1",
        row_id,
    )
    assert row is not None
    return dict(row)


async def test_enqueue_writes_one_row_per_url_with_the_exact_body(store: SqlStore) -> None:
    outbox = WebhookOutbox(store)
    env = await environment_id(store)

    ids = await outbox.enqueue(env, ["https://a.example/hook", "https://b.example/hook"], BODY)
    claimed = await outbox.claim_due(10, LEASE_MS)

    assert [row.id for row in claimed] == ids
    assert [row.url for row in claimed] == ["https://a.example/hook", "https://b.example/hook"]
    assert {row.body for row in claimed} == {BODY}
    assert {row.attempts for row in claimed} == {1}
    assert {row.environment_id for row in claimed} == {env}


async def test_enqueue_of_no_url_writes_nothing(store: SqlStore) -> None:
    outbox = WebhookOutbox(store)
    assert await outbox.enqueue(await environment_id(store), [], BODY) == []
    assert await store.db.fetchval("SELECT COUNT(*) FROM webhook_outbox") == 0


async def test_enqueue_wakes_subscribers(store: SqlStore) -> None:
    outbox = WebhookOutbox(store)
    woken: list[str] = []
    outbox.subscribe(lambda: woken.append("woken"))

    await outbox.enqueue(await environment_id(store), ["https://a.example/"], BODY)

    assert woken == ["woken"]


async def test_a_claimed_row_is_not_claimed_again_until_its_lease_ends(
    store: SqlStore, clock: FakeClock
) -> None:
    outbox = WebhookOutbox(store)
    [row_id] = await outbox.enqueue(await environment_id(store), ["https://a.example/"], BODY)

    [first] = await outbox.claim_due(10, LEASE_MS)
    clock.advance(LEASE_MS - 1)
    assert await outbox.claim_due(10, LEASE_MS) == []
    clock.advance(1)
    [again] = await outbox.claim_due(10, LEASE_MS)

    assert first.id == again.id == row_id
    assert again.attempts == 2  # the crashed claim counted as an attempt


async def test_claims_take_the_limit_oldest_due_first(store: SqlStore, clock: FakeClock) -> None:
    outbox = WebhookOutbox(store)
    env = await environment_id(store)
    ids = []
    for index in range(5):
        ids += await outbox.enqueue(env, [f"https://a.example/{index}"], BODY)
        clock.advance(1)

    first = await outbox.claim_due(2, LEASE_MS)
    rest = await outbox.claim_due(10, LEASE_MS)

    assert [row.id for row in first] == ids[:2]
    assert [row.id for row in rest] == ids[2:]


async def test_a_retried_row_is_due_only_at_its_next_attempt(
    store: SqlStore, clock: FakeClock
) -> None:
    outbox = WebhookOutbox(store)
    await outbox.enqueue(await environment_id(store), ["https://a.example/"], BODY)
    [row] = await outbox.claim_due(10, LEASE_MS)

    assert await outbox.mark_retry(row, clock() + 5_000, "HTTP 503")
    assert await outbox.claim_due(10, LEASE_MS) == []  # released, but not due yet
    clock.advance(5_000)
    [retried] = await outbox.claim_due(10, LEASE_MS)

    assert retried.attempts == 2
    state = await row_state(store, row.id)
    assert state["last_error"] == "HTTP 503"


async def test_delivered_and_failed_rows_are_never_claimed_again(
    store: SqlStore, clock: FakeClock
) -> None:
    outbox = WebhookOutbox(store)
    await outbox.enqueue(
        await environment_id(store), ["https://a.example/", "https://b.example/"], BODY
    )
    delivered, failed = await outbox.claim_due(10, LEASE_MS)

    settled_at = clock()
    assert await outbox.mark_delivered(delivered)
    assert await outbox.mark_failed(failed, "HTTP 404")
    clock.advance(10 * LEASE_MS)

    assert await outbox.claim_due(10, LEASE_MS) == []
    assert (await row_state(store, delivered.id))["delivered_at"] == settled_at
    failed_state = await row_state(store, failed.id)
    assert failed_state["failed_at"] == settled_at
    assert failed_state["last_error"] == "HTTP 404"
    assert failed_state["claimed_until"] is None


async def test_a_claim_that_ran_out_cannot_settle_the_row_it_lost(
    store: SqlStore, clock: FakeClock
) -> None:
    outbox = WebhookOutbox(store)
    await outbox.enqueue(await environment_id(store), ["https://a.example/"], BODY)
    [stale] = await outbox.claim_due(10, LEASE_MS)
    clock.advance(LEASE_MS)
    [current] = await outbox.claim_due(10, LEASE_MS)  # another sender took it over

    assert not await outbox.mark_failed(stale, "HTTP 400")
    assert not await outbox.mark_retry(stale, clock() + 1, "timeout")
    assert not await outbox.mark_delivered(stale)
    state = await row_state(store, current.id)
    assert state["failed_at"] is None
    assert state["delivered_at"] is None
    assert state["claimed_until"] == clock() + LEASE_MS  # still the current claim's

    assert await outbox.mark_delivered(current)


async def test_purge_deletes_only_finished_rows_past_retention(
    store: SqlStore, clock: FakeClock
) -> None:
    outbox = WebhookOutbox(store)
    env = await environment_id(store)
    await outbox.enqueue(env, ["https://old.example/ok", "https://old.example/no"], BODY)
    old_ok, old_failed = await outbox.claim_due(10, LEASE_MS)
    await outbox.mark_delivered(old_ok)
    await outbox.mark_failed(old_failed, "HTTP 410")
    [pending] = await outbox.enqueue(env, ["https://pending.example/"], BODY)
    clock.advance(7 * DAY_MS)
    [recent] = await outbox.enqueue(env, ["https://recent.example/"], BODY)
    [recent_row] = [row for row in await outbox.claim_due(10, LEASE_MS) if row.id == recent]
    await outbox.mark_delivered(recent_row)
    clock.advance(1)

    purged = await outbox.purge(7 * DAY_MS, batch_size=1)

    remaining = await store.db.fetch("SELECT id FROM webhook_outbox ORDER BY id")
    assert purged == 2
    assert [int(row["id"]) for row in remaining] == [pending, recent]


async def test_concurrent_claimers_on_one_database_never_share_a_row(
    database_url: str, keyring: Keyring, clock: FakeClock
) -> None:
    first = await open_store(database_url, keyring, clock=clock)
    second = await open_store(database_url, keyring, clock=clock)
    try:
        env = await environment_id(first)
        urls = [f"https://a.example/{index}" for index in range(120)]
        ids = await WebhookOutbox(first).enqueue(env, urls, BODY)
        claimers = [WebhookOutbox(first), WebhookOutbox(second)] * 10

        batches = await asyncio.gather(*(outbox.claim_due(7, LEASE_MS) for outbox in claimers))
        batches += await asyncio.gather(*(outbox.claim_due(7, LEASE_MS) for outbox in claimers))

        claimed = [row.id for batch in batches for row in batch]
        assert sorted(claimed) == ids  # every row once: none twice, none left out
    finally:
        await second.close()
        await first.close()


async def test_a_restart_finds_the_rows_a_dead_sender_had_claimed(
    database_url: str, keyring: Keyring, clock: FakeClock
) -> None:
    before = await open_store(database_url, keyring, clock=clock)
    env = await environment_id(before)
    ids = await WebhookOutbox(before).enqueue(env, ["https://a.example/", "https://b/"], BODY)
    await WebhookOutbox(before).claim_due(1, LEASE_MS)  # then the process dies
    await before.close()

    after = await open_store(database_url, keyring, clock=clock)
    try:
        outbox = WebhookOutbox(after)
        [unclaimed] = await outbox.claim_due(10, LEASE_MS)
        await outbox.mark_delivered(unclaimed)
        clock.advance(LEASE_MS)
        [reclaimed] = await outbox.claim_due(10, LEASE_MS)
    finally:
        await after.close()

    assert sorted([unclaimed.id, reclaimed.id]) == ids
    assert reclaimed.attempts == 2
