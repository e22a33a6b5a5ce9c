"""Delivers what the outbox holds: claim, sign, POST, settle; in the background.

One pass (`deliver_due`) claims up to `batch_size` due rows, signs each body with its
environment's current webhook secret, posts them concurrently and records each outcome:

| answer | outcome |
| --- | --- |
| 2xx | delivered |
| network error, timeout, 408, 429, 5xx | retried, until `max_attempts` |
| 3xx (never followed), other 4xx, a URL the outbound policy refuses | failed at once |

Retries back off exponentially with jitter, and never sooner than a Retry-After.

The background loop runs a pass, then waits for the poll interval, or less when this
process queues a webhook (the outbox wakes its senders), or not at all when the pass
was full. Other processes' rows are found by the poll. Delivered and failed rows are
purged after `retention_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from credentials.database import StoreUnavailable
from credentials.environment_settings import EnvironmentSettingsStore
from credentials.store import SqlStore
from credentials.tasks import spawn
from credentials.webhooks.delivery import Attempt, WebhookHttp, origin
from credentials.webhooks.outbox import OutboxRow, WebhookOutbox
from credentials.webhooks.signing import signature_headers, signing_secret

log = logging.getLogger("authgate.webhooks")

Verdict = Literal["delivered", "retry", "failed"]

DAY_MS = 86_400_000
USER_AGENT = "authgate-webhooks"
DELIVERY_HEADER = "X-Authgate-Delivery"
"""The outbox row's id: the same on every retry of one webhook, so a receiver can drop a
repeat (delivery is at least once)."""


@dataclass(frozen=True, slots=True)
class SenderSettings:
    poll_interval: float = 5.0
    """Seconds between passes when nothing wakes the sender."""
    batch_size: int = 10
    """Rows claimed, and posted concurrently, per pass."""
    timeout: float = 20.0
    """Seconds one POST may take, connecting included."""
    lease: float = 60.0
    """Seconds a claim holds; longer than `timeout`, so a live sender never loses a row."""
    max_attempts: int = 8
    backoff_first: float = 30.0
    backoff_max: float = 1800.0
    """With the defaults, the 8 attempts of a failing webhook span about an hour."""
    retention_days: float = 7.0
    purge_interval: float = 3600.0
    close_grace: float = 5.0
    """Seconds `close` lets a pass in progress finish before cancelling it."""

    def __post_init__(self) -> None:
        if self.lease <= self.timeout:
            raise ValueError("the claim lease must be longer than the delivery timeout")
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")


def judge(attempt: Attempt) -> Verdict:
    status = attempt.status
    if status is None:
        return "retry" if attempt.retryable else "failed"
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "failed"


def retry_delay(
    attempts: int,
    settings: SenderSettings,
    retry_after: float | None = None,
    fraction: Callable[[], float] = random.random,
) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from
    `backoff_first`, capped, jittered by ±25% so failing receivers are not retried in
    step; never sooner than the receiver's Retry-After (itself capped)."""
    growth = 2.0 ** min(attempts - 1, 30)
    delay = min(settings.backoff_first * growth, settings.backoff_max)
    delay *= 0.75 + fraction() / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_max))
    return delay


class WebhookSender:
    """Delivers the outbox of `store`. `start()` runs the background loop; `deliver_due()`
    runs one pass (tests drive it directly). Without `http`, the sender makes its own
    client under the outbound policy (`allow_private`) and closes it in `close()`."""

    def __init__(
        self,
        store: SqlStore,
        http: WebhookHttp | None = None,
        *,
        settings: SenderSettings | None = None,
        allow_private: bool = False,
        outbox: WebhookOutbox | None = None,
        fraction: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._settings = settings or SenderSettings()
        self._owns_http = http is None
        self._http = http or WebhookHttp(
            allow_private=allow_private, timeout=self._settings.timeout
        )
        self._outbox = outbox or WebhookOutbox(store)
        self._environments = EnvironmentSettingsStore(store)
        self._fraction = fraction
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def outbox(self) -> WebhookOutbox:
        return self._outbox

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the webhook sender is already running")
        self._stopping = False
        self._outbox.subscribe(self.wake)
        self._task = spawn(self._run(), name="webhook-sender")

    async def close(self) -> None:
        self._outbox.unsubscribe(self.wake)
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            # A pass in progress may finish; rows it cannot settle in time stay claimed
            # and are sent again once their lease ends (at least once, never lost).
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), self._settings.close_grace)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._owns_http:
            await self._http.close()

    def wake(self) -> None:
        """Run a pass now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while not self._stopping:
            self._wake.clear()
            full = False
            try:
                full = await self.deliver_due() >= self._settings.batch_size
                if loop.time() >= next_purge:
                    await self.purge()
                    next_purge = loop.time() + self._settings.purge_interval
            except StoreUnavailable as outage:
                log.warning("webhook sender: %s", outage)
            except Exception as failure:
                log.error("webhook sender pass failed: %s", type(failure).__name__)
            if full or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_interval):
                    await self._wake.wait()

    # --- one pass ------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Claim, send and settle one batch of due rows; returns how many were claimed."""
        lease_ms = int(self._settings.lease * 1000)
        rows = await self._outbox.claim_due(self._settings.batch_size, lease_ms)
        if not rows:
            return 0
        secrets = await self._signing_secrets({row.environment_id for row in rows})
        await asyncio.gather(*(self._deliver(row, secrets.get(row.environment_id)) for row in rows))
        return len(rows)

    async def purge(self) -> int:
        retention_ms = int(self._settings.retention_days * DAY_MS)
        return await self._outbox.purge(retention_ms)

    async def _signing_secrets(self, environment_ids: Iterable[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for environment_id in environment_ids:
            try:
                found[environment_id] = await signing_secret(self._environments, environment_id)
            except Exception as failure:
                # e.g. sealed under a key no longer configured: never send unsigned.
                log.warning(
                    "webhook signing secret unavailable: %s",
                    type(failure).__name__,
                    extra={"environment_id": environment_id},
                )
        return found

    async def _deliver(self, row: OutboxRow, secret: str | None) -> None:
        if secret is None:
            attempt = Attempt(error="the webhook signing secret is unavailable", retryable=True)
        else:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                DELIVERY_HEADER: str(row.id),
                **signature_headers(secret, row.body),
            }
            attempt = await self._http.post(row.url, row.body, headers)
        try:
            await self._settle(row, attempt)
        except Exception as failure:
            # The claim runs out and the row is tried again: at least once.
            log.warning(
                "webhook outcome not recorded: %s",
                type(failure).__name__,
                extra={"webhook_id": row.id},
            )

    async def _settle(self, row: OutboxRow, attempt: Attempt) -> None:
        verdict = judge(attempt)
        where = {
            "webhook_id": row.id,
            "destination": origin(row.url),
            "attempt": row.attempts,
            "outcome": attempt.describe(),
        }
        if verdict == "delivered":
            await self._outbox.mark_delivered(row)
            log.info("webhook delivered", extra=where)
        elif verdict == "retry" and row.attempts < self._settings.max_attempts:
            delay = retry_delay(row.attempts, self._settings, attempt.retry_after, self._fraction)
            next_at = self._store.clock() + int(delay * 1000)
            await self._outbox.mark_retry(row, next_at, attempt.describe())
            log.warning("webhook delivery failed; will retry", extra={**where, "delay_s": delay})
        else:
            await self._outbox.mark_failed(row, attempt.describe())
            log.warning("webhook delivery failed; giving up", extra=where)
