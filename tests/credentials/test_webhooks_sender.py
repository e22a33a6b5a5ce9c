"""The webhook sender against a real receiving server, on both store backends.

Passes are driven with `deliver_due()` and the store's `FakeClock`, so retries and leases
are moved by the test rather than waited for; one test runs the background loop to
prove it wakes when this process queues a webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from credentials.crypto import Keyring
from credentials.environment_settings import EnvironmentSettingsStore
from credentials.store import SqlStore, open_store
from credentials.webhooks.delivery import Attempt, WebhookHttp, retry_after_seconds
from credentials.webhooks.outbox import WebhookOutbox
from credentials.webhooks.sender import (
    DELIVERY_HEADER,
    SenderSettings,
    WebhookSender,
    judge,
    retry_delay,
)
from tests.credentials.conftest import FakeClock
from tests.e2e.webhook_receiver import REDIRECT_TARGET, WebhookReceiver, serve_receiver

BODY = orjson.dumps({"from": "nango", "operation": "creation", "type": "auth"})
WEBHOOK_SECRET = "whsec-test-0123456789abcdef0123456789abcdef"
# No jitter (fraction 0.5 multiplies by exactly 1), 1 s doubling, 3 attempts.
SETTINGS = SenderSettings(
    backoff_first=1.0, backoff_max=8.0, max_attempts=3, timeout=5.0, lease=30.0
)


def no_jitter() -> float:
    return 0.5


@dataclass
class Bench:
    store: SqlStore
    clock: FakeClock
    receiver: WebhookReceiver
    base_url: str
    environment_id: int
    outbox: WebhookOutbox
    sender: WebhookSender

    async def queue(self, path: str = "/hook", body: bytes = BODY) -> int:
        [row_id] = await self.outbox.enqueue(self.environment_id, [self.base_url + path], body)
        return row_id

    async def state(self, row_id: int) -> dict[str, object]:
        row = await self.store.db.fetchrow(
            "SELECT attempts, next_attempt_at, last_error, delivered_at, failed_at"
            " FROM webhook_outbox WHERE id = $1",
            row_id,
        )
        assert row is not None
        return dict(row)


@pytest.fixture
async def bench(store: SqlStore, clock: FakeClock) -> AsyncIterator[Bench]:
    receiver = WebhookReceiver()
    environment = await store.create_environment("dev")
    await EnvironmentSettingsStore(store).update(environment.id, webhook_secret=WEBHOOK_SECRET)
    outbox = WebhookOutbox(store)
    sender = WebhookSender(
        store, settings=SETTINGS, allow_private=True, outbox=outbox, fraction=no_jitter
    )
    async with serve_receiver(receiver) as base_url:
        try:
            yield Bench(store, clock, receiver, base_url, environment.id, outbox, sender)
        finally:
            await sender.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused


# --- one delivery ---------------------------------------------------------------------------


async def test_a_webhook_is_posted_signed_with_the_environment_secret(bench: Bench) -> None:
    row_id = await bench.queue()

    assert await bench.sender.deliver_due() == 1

    [delivery] = bench.receiver.deliveries
    assert delivery.path == "/hook"
    assert delivery.body == BODY
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers[DELIVERY_HEADER] == str(row_id)
    expected_hmac = hmac.new(WEBHOOK_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers["X-Nango-Hmac-Sha256"], expected_hmac)
    legacy = hashlib.sha256(WEBHOOK_SECRET.encode() + BODY).hexdigest()
    assert hmac.compare_digest(delivery.headers["X-Nango-Signature"], legacy)
    state = await bench.state(row_id)
    assert state["delivered_at"] == bench.clock()
    assert state["attempts"] == 1
    assert await bench.sender.deliver_due() == 0  # delivered once, not again


async def test_an_environment_without_a_secret_gets_one_and_never_sends_unsigned(
    bench: Bench,
) -> None:
    settings = EnvironmentSettingsStore(bench.store)
    await settings.update(bench.environment_id, webhook_secret=None)
    await bench.queue()

    await bench.sender.deliver_due()

    secret = (await settings.get(bench.environment_id)).webhook_secret
    assert secret is not None
    assert secret != WEBHOOK_SECRET
    [delivery] = bench.receiver.deliveries
    expected = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert delivery.headers["X-Nango-Hmac-Sha256"] == expected


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_retryable_answers_are_retried_after_the_backoff(bench: Bench, status: int) -> None:
    row_id = await bench.queue()
    bench.receiver.answers = [status]

    await bench.sender.deliver_due()
    state = await bench.state(row_id)
    assert state["last_error"] == f"HTTP {status}"
    assert state["next_attempt_at"] == bench.clock() + 1_000  # backoff_first, no jitter

    bench.clock.advance(999)
    assert await bench.sender.deliver_due() == 0
    bench.clock.advance(1)
    assert await bench.sender.deliver_due() == 1

    assert len(bench.receiver.deliveries) == 2
    state = await bench.state(row_id)
    assert state["delivered_at"] == bench.clock()
    assert state["attempts"] == 2


async def test_backoff_doubles_and_the_last_attempt_fails_the_row(bench: Bench) -> None:
    row_id = await bench.queue()
    bench.receiver.answers = [503, 503, 503]

    await bench.sender.deliver_due()
    first_retry = await bench.state(row_id)
    bench.clock.advance(1_000)
    await bench.sender.deliver_due()
    second_retry = await bench.state(row_id)
    bench.clock.advance(2_000)
    await bench.sender.deliver_due()
    bench.clock.advance(60_000)
    assert await bench.sender.deliver_due() == 0

    assert first_retry["next_attempt_at"] == bench.clock() - 63_000 + 1_000
    assert second_retry["next_attempt_at"] == bench.clock() - 62_000 + 2_000
    state = await bench.state(row_id)
    assert state["attempts"] == 3
    assert state["failed_at"] is not None
    assert state["delivered_at"] is None
    assert len(bench.receiver.deliveries) == 3


async def test_retry_after_is_honoured(bench: Bench) -> None:
    row_id = await bench.queue()
    bench.receiver.answers = [(429, {"Retry-After": "5"})]

    await bench.sender.deliver_due()

    assert (await bench.state(row_id))["next_attempt_at"] == bench.clock() + 5_000


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_4xx_answers_fail_at_once(bench: Bench, status: int) -> None:
    row_id = await bench.queue()
    bench.receiver.answers = [status]

    await bench.sender.deliver_due()
    bench.clock.advance(3_600_000)
    assert await bench.sender.deliver_due() == 0

    state = await bench.state(row_id)
    assert state["failed_at"] is not None
    assert state["last_error"] == f"HTTP {status}"
    assert len(bench.receiver.deliveries) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed_and_fails_the_row(bench: Bench, status: int) -> None:
    row_id = await bench.queue()
    bench.receiver.answers = [status]

    await bench.sender.deliver_due()

    assert bench.receiver.at(REDIRECT_TARGET) == []
    assert len(bench.receiver.deliveries) == 1
    state = await bench.state(row_id)
    assert state["failed_at"] is not None
    assert state["last_error"] == f"HTTP {status}"


async def test_an_unreachable_url_is_retried_then_failed(bench: Bench) -> None:
    [row_id] = await bench.outbox.enqueue(
        bench.environment_id, [f"http://127.0.0.1:{closed_port()}/hook"], BODY
    )

    for _ in range(SETTINGS.max_attempts):
        assert await bench.sender.deliver_due() == 1
        state = await bench.state(row_id)
        assert str(state["last_error"]).startswith("network: ")
        bench.clock.advance(60_000)
    assert await bench.sender.deliver_due() == 0

    state = await bench.state(row_id)
    assert state["attempts"] == SETTINGS.max_attempts
    assert state["failed_at"] is not None


async def test_a_receiver_slower_than_the_timeout_is_retried(
    store: SqlStore, clock: FakeClock
) -> None:
    receiver = WebhookReceiver()
    receiver.hold = asyncio.Event()  # never set before the timeout: the receiver hangs
    environment = await store.create_environment("dev")
    outbox = WebhookOutbox(store)
    settings = SenderSettings(timeout=0.2, lease=5.0, backoff_first=1.0)
    sender = WebhookSender(store, settings=settings, allow_private=True, fraction=no_jitter)
    async with serve_receiver(receiver) as base_url:
        try:
            [row_id] = await outbox.enqueue(environment.id, [base_url + "/slow"], BODY)
            await sender.deliver_due()
        finally:
            receiver.hold.set()
            await sender.close()

    row = await store.db.fetchrow(
        "SELECT last_error, next_attempt_at FROM webhook_outbox WHERE id = $1", row_id
    )
    assert row is not None
    assert row["last_error"] == "timeout"
    assert row["next_attempt_at"] == clock() + 1_000


# --- the outbound policy at delivery ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [("http://127.0.0.1:{port}/hook", "loopback"), ("http://localhost:{port}/hook", "loopback")],
)
async def test_the_outbound_policy_is_applied_when_sending(
    store: SqlStore, url: str, reason: str
) -> None:
    receiver = WebhookReceiver()
    environment = await store.create_environment("dev")
    outbox = WebhookOutbox(store)
    sender = WebhookSender(store, settings=SETTINGS, allow_private=False)
    async with serve_receiver(receiver) as base_url:
        port = base_url.rsplit(":", 1)[1]
        [row_id] = await outbox.enqueue(environment.id, [url.format(port=port)], BODY)
        try:
            await sender.deliver_due()
        finally:
            await sender.close()

    assert receiver.deliveries == []
    row = await store.db.fetchrow(
        "SELECT last_error, failed_at FROM webhook_outbox WHERE id = $1", row_id
    )
    assert row is not None
    assert row["last_error"] == f"refused by the outbound policy: {reason}"
    assert row["failed_at"] is not None


# --- restarts and several senders -------------------------------------------------------------


async def test_a_restart_delivers_everything_that_was_pending(
    database_url: str, keyring: Keyring, clock: FakeClock
) -> None:
    receiver = WebhookReceiver()
    pairs = SenderSettings(batch_size=2, backoff_first=1.0, timeout=5.0, lease=30.0)
    async with serve_receiver(receiver) as base_url:
        before = await open_store(database_url, keyring, clock=clock)
        environment = await before.create_environment("dev")
        bodies = [orjson.dumps({"n": index}) for index in range(6)]
        for body in bodies:
            await WebhookOutbox(before).enqueue(environment.id, [base_url + "/hook"], body)
        receiver.answers = [503]
        first = WebhookSender(before, settings=pairs, allow_private=True, fraction=no_jitter)
        await first.deliver_due()  # two rows: one delivered, one to retry in 1 s
        await WebhookOutbox(before).claim_due(2, 30_000)  # two more claimed, then it dies
        await first.close()
        await before.close()
        assert len(receiver.deliveries) == 2

        after = await open_store(database_url, keyring, clock=clock)
        second = WebhookSender(after, settings=pairs, allow_private=True, fraction=no_jitter)
        try:
            while await second.deliver_due():
                pass
            untouched_only = len(receiver.deliveries)
            clock.advance(30_000)  # the retry is due, and the dead sender's lease is over
            while await second.deliver_due():
                pass
        finally:
            await second.close()
            await after.close()

    assert untouched_only == 4  # claimed rows wait for their lease; the retry for its time
    received = [delivery.body for delivery in receiver.deliveries]
    assert len(received) == 7  # the 503 answer, then each of the six delivered once
    assert sorted(set(received)) == sorted(bodies)


async def test_two_senders_on_one_database_never_deliver_a_row_twice(
    database_url: str, keyring: Keyring, clock: FakeClock
) -> None:
    receiver = WebhookReceiver()
    stores = [await open_store(database_url, keyring, clock=clock) for _ in range(2)]
    settings = SenderSettings(batch_size=5, lease=30.0, timeout=5.0)
    senders = [WebhookSender(store, settings=settings, allow_private=True) for store in stores]
    try:
        async with serve_receiver(receiver) as base_url:
            environment = await stores[0].create_environment("dev")
            for index in range(40):
                body = orjson.dumps({"n": index})
                await WebhookOutbox(stores[0]).enqueue(environment.id, [base_url + "/h"], body)
            # Both senders have a batch in flight at once: the receiver holds the first
            # ten requests until both have claimed.
            receiver.hold = asyncio.Event()
            one = asyncio.ensure_future(senders[0].deliver_due())
            await receiver.wait_for(5)
            other = asyncio.ensure_future(senders[1].deliver_due())
            await receiver.wait_for(10)
            receiver.hold.set()
            assert list(await asyncio.gather(one, other)) == [5, 5]

            async def drain(sender: WebhookSender) -> None:
                while await sender.deliver_due():
                    pass

            await asyncio.gather(*(drain(sender) for sender in senders))
    finally:
        for sender in senders:
            await sender.close()
        for store in stores:
            await store.close()

    received = [orjson.loads(delivery.body)["n"] for delivery in receiver.deliveries]
    assert sorted(received) == list(range(40))


# --- the background loop ----------------------------------------------------------------------


async def test_the_loop_wakes_when_this_process_queues_a_webhook(bench: Bench) -> None:
    sender = WebhookSender(
        bench.store,
        settings=SenderSettings(poll_interval=3600.0, batch_size=5),
        allow_private=True,
        outbox=bench.outbox,
    )
    await bench.queue(body=b'{"n":1}')
    await sender.start()
    try:
        await bench.receiver.wait_for(1)  # the first pass ran; the loop now waits an hour
        await bench.queue(body=b'{"n":2}')
        deliveries = await bench.receiver.wait_for(2)
    finally:
        await sender.close()

    assert [delivery.body for delivery in deliveries] == [b'{"n":1}', b'{"n":2}']


async def test_the_loop_delivers_what_it_finds_at_start_and_stops_on_close(
    bench: Bench,
) -> None:
    sender = WebhookSender(bench.store, settings=SETTINGS, allow_private=True)
    await bench.queue()
    await sender.start()
    with pytest.raises(RuntimeError):
        await sender.start()
    await bench.receiver.wait_for(1)
    await sender.close()
    await sender.close()  # closing twice is harmless


# --- purging ---------------------------------------------------------------------------------


async def test_the_sender_purges_finished_rows_after_the_retention(bench: Bench) -> None:
    delivered = await bench.queue()
    await bench.sender.deliver_due()
    pending = await bench.queue()
    bench.clock.advance(int(SETTINGS.retention_days * 86_400_000) + 1)

    assert await bench.sender.purge() == 1

    rows = await bench.store.db.fetch("SELECT id FROM webhook_outbox")
    assert [int(row["id"]) for row in rows] == [pending]
    assert delivered != pending


# --- pure rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "verdict"),
    [
        (Attempt(status=200), "delivered"),
        (Attempt(status=204), "delivered"),
        (Attempt(status=299), "delivered"),
        (Attempt(status=301), "failed"),
        (Attempt(status=304), "failed"),
        (Attempt(status=400), "failed"),
        (Attempt(status=408), "retry"),
        (Attempt(status=429), "retry"),
        (Attempt(status=500), "retry"),
        (Attempt(status=599), "retry"),
        (Attempt(error="network: ClientConnectorError", retryable=True), "retry"),
        (Attempt(error="refused by the outbound policy: loopback"), "failed"),
    ],
)
def test_judge(attempt: Attempt, verdict: str) -> None:
    assert judge(attempt) == verdict


def test_retry_delay_doubles_is_capped_and_jittered_within_a_quarter() -> None:
    settings = SenderSettings(backoff_first=30.0, backoff_max=1800.0)
    middle = [retry_delay(attempts, settings, fraction=no_jitter) for attempts in range(1, 9)]
    assert middle == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]
    assert retry_delay(1, settings, fraction=lambda: 0.0) == 22.5
    assert retry_delay(1, settings, fraction=lambda: 1.0) == 37.5
    assert retry_delay(1, settings, retry_after=300.0, fraction=no_jitter) == 300.0
    assert retry_delay(1, settings, retry_after=1e9, fraction=no_jitter) == 1800.0
    # The default schedule spans about an hour over its eight attempts.
    assert 3000 < sum(middle[:7]) < 4500


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_a_lease_shorter_than_the_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="lease"):
        SenderSettings(timeout=20.0, lease=20.0)


async def test_the_client_refuses_urls_it_cannot_send() -> None:
    http = WebhookHttp(allow_private=True)
    try:
        for url in ("ftp://example.com/hook", "not a url", "http:///nohost"):
            attempt = await http.post(url, BODY, {})
            assert attempt.status is None
            assert not attempt.retryable
    finally:
        await http.close()
