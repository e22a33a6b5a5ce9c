"""Fresh credentials for a connection: renewed when due, exactly once across processes.

The path of one refresh, each step guarding against a different race:

1. **Due?** Pure arithmetic on the stored expiry (a margin, default 15 min, plus a
   per-connection jitter so tokens issued together are not renewed together). A warm
   request that is not due does no I/O at all.
2. **One flight per process.** Concurrent callers in this process share one attempt.
3. **One holder across processes.** A lease in Redis backed by a lease row in the store,
   both renewed while the token call runs; the store row alone while Redis is
   unreachable (`credentials.locks`). A caller
   that finds the lease taken waits for the holder's write (a change event; a short
   poll without Redis) and re-reads, rather than spinning on the lock.
4. **Re-read under the lease.** Another process may have just finished: then its
   credentials are used and no token call is made.
5. **Compare-and-set write** on the connection's version before anyone sees the new
   token, so a stale writer can never replace a newer rotated refresh token.
6. **Failure lifecycle.** `invalid_grant` first re-reads (a duplicate refresh racing a
   rotation elsewhere is absorbed, not reported); permanent refusals mark the connection
   as needing re-authorisation; transient ones back off exponentially; a success clears
   the state. An optional listener (auth webhooks) hears of each recorded failure and of
   each success that ends a failing state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from credentials.change_waiters import ChangeWaiters
from credentials.expiry import stored_expiry
from credentials.grants import Grant, GrantError, GrantRequest, TokenHttp, renew, renewable
from credentials.locks import Lease, RefreshLocks
from credentials.models import Connection, Integration, Provider
from credentials.observe import current as observer
from credentials.store import UNCHANGED, SqlStore
from credentials.tasks import spawn

log = logging.getLogger("authgate.refresh")

Clock = Callable[[], float]

# A token is renewed no earlier than halfway through its lifetime.
MAX_MARGIN_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class RefreshSettings:
    margin: float = 900.0  # seconds before expiry when a token is renewed
    jitter: float = 0.1  # up to this fraction of the margin is added, per connection
    lock_wait: float = 30.0  # how long a caller waits for another process's refresh
    poll_interval: float = 0.25  # re-read cadence while waiting without a change event
    backoff_first: float = 5.0
    backoff_max: float = 600.0
    rotation_grace: float = 2.0  # after invalid_grant: wait this long for a rotation elsewhere


class RefreshError(Exception):
    """A refresh did not produce usable credentials. The message is safe to show."""

    def __init__(self, message: str, *, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class NeedsReauthorization(RefreshError):
    """The provider refused for good (`invalid_grant`, revoked, bad client)."""


class RefreshBackoff(RefreshError):
    """An earlier attempt failed moments ago; not trying again yet."""


class RefreshFailed(RefreshError):
    """This attempt failed for a reason that may pass (provider down, network, timeout)."""


class RefreshListener(Protocol):
    """Hears about refresh outcomes the connection's owner cares about (auth webhooks).

    Called after the outcome is stored: a failure once it is recorded, a recovery once
    a success has cleared a failing state. Its errors are logged, never raised."""

    async def refresh_failed(
        self, connection: Connection, *, auth_mode: str, error_description: str
    ) -> None: ...

    async def refresh_recovered(self, connection: Connection, *, auth_mode: str) -> None: ...


class Refresher:
    def __init__(
        self,
        store: SqlStore,
        locks: RefreshLocks,
        http: TokenHttp,
        waiters: ChangeWaiters,
        settings: RefreshSettings | None = None,
        *,
        clock: Clock = time.time,
        listener: RefreshListener | None = None,
    ) -> None:
        self._store = store
        self._locks = locks
        self._http = http
        self._waiters = waiters
        self._settings = settings or RefreshSettings()
        self._clock = clock
        self._listener = listener
        self._flights: dict[int, asyncio.Task[Connection]] = {}
        # Attempts and outcomes by (credential type, outcome); also reported to the
        # process's observer, which exports them as metrics.
        self.counts: Counter[tuple[str, str]] = Counter()

    # --- the cheap question every request asks ----------------------------------------

    def due_at(self, connection: Connection, provider: Provider) -> float:
        """Epoch seconds from which the credentials should be renewed (inf: never).

        A renewable connection with no token yet is due at once. The margin never
        exceeds half of the token's lifetime, so a five-minute token is not renewed on
        every request.
        """
        if not renewable(connection, provider):
            return math.inf
        credentials = connection.credentials
        if not (credentials.get("access_token") or credentials.get("token")):
            return -math.inf
        expiry = stored_expiry(credentials)
        if expiry is None:
            return math.inf  # nothing says when it expires: only a 401 will renew it
        margin = min(
            _margin(provider, self._settings.margin),
            _lifetime(connection, expiry) * MAX_MARGIN_SHARE,
        )
        return expiry - margin - margin * self._settings.jitter * _spread(connection)

    # --- the refresh ----------------------------------------------------------------

    async def fresh(
        self,
        connection: Connection,
        integration: Integration,
        provider: Provider,
        *,
        force: bool = False,
        bypass_backoff: bool = False,
    ) -> Connection:
        """The connection with credentials good to use now, renewing them if due.

        `force` renews even when not due (a provider answered 401), unless the stored
        version has moved past `connection.version` meanwhile: then someone else already
        renewed and their credentials are returned. A connection that needs
        re-authorisation or is backing off fails fast unless `bypass_backoff` (an
        operator's explicit request).
        """
        if not renewable(connection, provider):
            return connection
        settled = self._verdict(connection, connection, provider, force, bypass_backoff)
        if settled is not None:
            return settled
        flight = self._flights.get(connection.id)
        if flight is None:
            work = self._coordinate(connection, integration, provider, force, bypass_backoff)
            flight = spawn(work, name="credential-refresh")
            self._flights[connection.id] = flight
            flight.add_done_callback(lambda done: self._land(connection.id, done))
        return await asyncio.shield(flight)

    def _land(self, connection_pk: int, done: asyncio.Task[Connection]) -> None:
        if self._flights.get(connection_pk) is done:
            del self._flights[connection_pk]

    async def _coordinate(
        self,
        seen: Connection,
        integration: Integration,
        provider: Provider,
        force: bool,
        bypass_backoff: bool,
    ) -> Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.lock_wait
        current = seen
        while True:
            held = await self._locks.try_acquire(f"refresh:{seen.id}")
            if held is not None:
                try:
                    current = await self._reread(current)
                    settled = self._verdict(current, seen, provider, force, bypass_backoff)
                    if settled is not None:
                        return settled
                    return await self._renew(current, integration, provider, held)
                finally:
                    await held.release()
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._count(current, "lock_timeout")
                raise RefreshFailed(
                    "Timed out waiting for another refresh of this connection",
                    reason="lock_timeout",
                )
            await self._waiters.wait(_key(current), min(self._settings.poll_interval, remaining))
            current = await self._reread(current)
            settled = self._verdict(current, seen, provider, force, bypass_backoff)
            if settled is not None:
                return settled

    def _verdict(
        self,
        current: Connection,
        seen: Connection,
        provider: Provider,
        force: bool,
        bypass_backoff: bool,
    ) -> Connection | None:
        """What to answer without a token call, or None when this caller must renew.

        Raises when the stored state says a renewal would be refused or is backing off.
        """
        now = self._clock()
        due = now >= self.due_at(current, provider)
        if current.version != seen.version and (force or not due):
            return current  # renewed (or re-authorised) by someone else meanwhile
        if not force and not due:
            return current
        if bypass_backoff:
            return None
        state = current.refresh
        if state.needs_reauth:
            raise NeedsReauthorization(_reauth_message(state.error), reason=state.error or "")
        if state.retry_at is not None and state.retry_at > now * 1000:
            if not force and still_valid(current, now):
                return current  # renewal is backing off, but the token still works
            raise RefreshBackoff(
                "A recent refresh attempt failed. Backing off before retrying.",
                reason=state.error or "backoff",
                retry_after=state.retry_at / 1000 - now,
            )
        return None

    async def _renew(
        self, current: Connection, integration: Integration, provider: Provider, held: Lease
    ) -> Connection:
        self._count(current, "attempt")
        request = GrantRequest(current, integration, provider, self._http, self._clock())
        try:
            grant = await renew(request)
        except GrantError as error:
            return await self._failed(current, provider, error)
        return await self._persist(current, provider, grant, held)

    async def _persist(
        self, current: Connection, provider: Provider, grant: Grant, held: Lease
    ) -> Connection:
        if held.lost:
            log.warning(
                "refresh lease lost during the token call; relying on compare-and-set",
                extra={"connection": current.connection_id},
            )
        config = UNCHANGED if grant.connection_config is None else grant.connection_config
        updated = await self._store.update_credentials(
            current, grant.credentials, expected_version=current.version, connection_config=config
        )
        if updated is not None:
            self._count(current, "refreshed")
            if current.refresh.failures > 0 or current.refresh.needs_reauth:
                await self._tell_recovered(updated, provider)
            return updated
        # Someone wrote in between (a re-authorisation, or a refresh whose lease we
        # outlived): theirs is newer; ours must not replace it.
        self._count(current, "superseded")
        return await self._reread(current)

    async def _failed(
        self, current: Connection, provider: Provider, error: GrantError
    ) -> Connection:
        if error.reason == "invalid_grant":
            rotated = await self._rotated_elsewhere(current)
            if rotated is not None:
                self._count(current, "absorbed_reuse")
                return rotated
        self._count(current, error.reason)
        now = self._clock()
        retry_at = None
        if not error.permanent:
            delay = _backoff(current.refresh.failures, self._settings, error.retry_after)
            retry_at = int((now + delay) * 1000)
        recorded = await self._store.record_refresh_failure(
            current, error=error.reason, needs_reauth=error.permanent, retry_at=retry_at
        )
        if recorded is None:
            return await self._reread(current)  # replaced meanwhile: judge the new ones
        log.warning(
            "credential refresh failed",
            extra={
                "connection": current.connection_id,
                "integration": current.provider_config_key,
                "reason": error.reason,
                "permanent": error.permanent,
                "status": error.status,
            },
        )
        await self._tell_failed(recorded, provider, error)
        if error.permanent:
            raise NeedsReauthorization(_reauth_message(error.reason), reason=error.reason)
        if still_valid(current, now):
            return recorded  # proactive renewal failed; the current token is still good
        raise RefreshFailed(
            f"The provider did not renew the credentials ({error.reason})",
            reason=error.reason,
            retry_after=None if retry_at is None else retry_at / 1000 - now,
        )

    async def _tell_failed(
        self, connection: Connection, provider: Provider, error: GrantError
    ) -> None:
        if self._listener is None:
            return
        try:
            await self._listener.refresh_failed(
                connection, auth_mode=provider.auth_mode, error_description=str(error)
            )
        except Exception as failure:
            log.warning("refresh listener failed: %s", type(failure).__name__)

    async def _tell_recovered(self, connection: Connection, provider: Provider) -> None:
        if self._listener is None:
            return
        try:
            await self._listener.refresh_recovered(connection, auth_mode=provider.auth_mode)
        except Exception as failure:
            log.warning("refresh listener failed: %s", type(failure).__name__)

    async def _rotated_elsewhere(self, current: Connection) -> Connection | None:
        """A newer version written by another process within the grace period, if any.

        The provider rejects a refresh token that another process has just rotated; its
        write may land a moment after our rejection, so look more than once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.rotation_grace
        while True:
            latest = await self._reread(current)
            if latest.version != current.version:
                return latest
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await self._waiters.wait(_key(current), min(self._settings.poll_interval, remaining))

    async def _reread(self, connection: Connection) -> Connection:
        latest = await self._store.get_connection(
            connection.environment_id, connection.provider_config_key, connection.connection_id
        )
        if latest is None:
            raise NeedsReauthorization(
                "The connection was deleted during the refresh", reason="deleted"
            )
        return latest

    def _count(self, connection: Connection, outcome: str) -> None:
        credential_type = str(connection.credentials.get("type", ""))
        self.counts[(credential_type, outcome)] += 1
        observer().refresh_event(credential_type, outcome)


def _key(connection: Connection) -> tuple[int, str, str]:
    return (connection.environment_id, connection.provider_config_key, connection.connection_id)


def _margin(provider: Provider, default: float) -> float:
    buffer: object = provider.definition.get("token_expiration_buffer")
    if isinstance(buffer, int | float) and not isinstance(buffer, bool) and buffer >= 0:
        return float(buffer)
    return default


def _lifetime(connection: Connection, expiry: float) -> float:
    """Seconds between when the token was obtained and `expiry` (inf when unknown)."""
    obtained = connection.refresh.last_refresh_at
    if obtained is not None:
        issued = obtained / 1000
    elif connection.updated_at is not None:
        issued = connection.updated_at.timestamp()
    else:
        return math.inf
    return expiry - issued if expiry > issued else math.inf


def _spread(connection: Connection) -> float:
    """A stable fraction in [0, 1) per connection and credential version."""
    digest = hashlib.blake2b(f"{connection.id}:{connection.version}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def still_valid(connection: Connection, now: float) -> bool:
    """Whether the stored token has not expired yet (unknown expiry counts as valid)."""
    expiry = stored_expiry(connection.credentials)
    return expiry is None or expiry > now


def _backoff(failures: int, settings: RefreshSettings, retry_after: float | None) -> float:
    growth: float = 2.0 ** min(failures, 16)
    delay = min(settings.backoff_first * growth, settings.backoff_max)
    delay *= 0.75 + random.random() / 2  # jitter: failing connections do not retry in step
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_max))
    return delay


def _reauth_message(reason: str | None) -> str:
    return (
        "The provider refused to renew the credentials"
        f" ({reason or 'refused'}); the connection needs to be re-authorised"
    )
