"""Cross-process refresh locks: a lease in Redis, or a lease row in the store without it.

A lock is a lease: it expires `ttl` seconds after it was taken unless its holder renews
it, so a crashed holder never blocks anyone for longer than that. While a `Held` lock
is alive, a background task renews it every `renew_every` seconds (ttl/3 by default).
The holder proves ownership with a random token: renewing and releasing only act when
the lease still carries that token, so a holder whose lease expired and was taken over
can never extend or delete its successor's lease. Once a renewal fails, finds another
owner, or the lease has run past its last confirmed expiry, `Held.lost` turns True for
good.

`RefreshLocks` takes the Redis lease first and then the store's `refresh_leases` row
behind it (`StoreLease`); while Redis does not answer it takes the store lease alone.
Redis is the cheap gate most contenders stop at; the store lease is what excludes in
every case, so a refresh stays exactly-once even when Redis dies while a lease is held:
the holder keeps its store lease, and processes that fall back find it taken. It costs
one store write and delete per refresh, never per request. Redis calls time out quickly
and a circuit breaker skips Redis for a short cool-down after a failure, so an outage
costs one timeout per cool-down; after the cool-down the next call tries Redis again,
so the fallback ends by itself once Redis is back.

What remains best effort: an acquire whose reply was lost to a timeout leaves a lease
nobody holds until it expires, and a holder stalled past its ttl (its renewals failing)
loses the lease to the next process. The refresh coordinator tolerates both: it
re-reads the connection once it holds a lock and writes with compare-and-set, so a
duplicate refresh costs one extra token call, never a lost or overwritten token.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import redis.asyncio as redis

from credentials.database import Database
from credentials.observe import current as observer
from credentials.redis_client import CircuitBreaker
from credentials.store import Clock, now_ms
from credentials.tasks import spawn

log = logging.getLogger("authgate.locks")

T = TypeVar("T")

DEFAULT_TTL = 10.0

# KEYS[1] = the lock, ARGV[1] = our token, ARGV[2] = the new ttl in ms.
_REDIS_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_REDIS_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Inserts the lease, or takes over an expired one; RETURNING yields a row only then.
_STORE_ACQUIRE = """
INSERT INTO refresh_leases (name, holder, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE refresh_leases.expires_at <= $4
RETURNING holder
"""
_STORE_RENEW = "UPDATE refresh_leases SET expires_at = $1 WHERE name = $2 AND holder = $3"
_STORE_RELEASE = "DELETE FROM refresh_leases WHERE name = $1 AND holder = $2"
_STORE_HELD = "SELECT 1 FROM refresh_leases WHERE name = $1 AND expires_at > $2"


class LockBackendDown(Exception):
    """Redis did not answer in time, or failed recently and is in its cool-down."""


class _Timing:
    """A lease's ttl and renewal period, validated once."""

    def __init__(self, ttl: float, renew_every: float | None) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        period = ttl / 3 if renew_every is None else renew_every
        if not 0 < period < ttl:
            raise ValueError("renew_every must be positive and shorter than ttl")
        self.ttl = ttl
        self.renew_every = period
        self.ttl_ms = max(1, round(ttl * 1000))


class _ReleasedOnExit:
    """`async with held:` releases the lock on the way out."""

    async def release(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.release()


class Held(_ReleasedOnExit):
    """A lock this process holds until `release()` (or the end of `async with`).

    Created by the locks, never directly. Release it in a `finally`: until then a
    background task keeps renewing the lease.
    """

    def __init__(
        self,
        name: str,
        timing: _Timing,
        *,
        renew: Callable[[], Awaitable[bool]],
        drop: Callable[[], Awaitable[None]],
        now: Callable[[], float],
        acquired_at: float,
    ) -> None:
        self.name = name
        self._timing = timing
        self._renew = renew
        self._drop = drop
        self._now = now
        # Measured from before the acquire request: the backend's clock started no later.
        self._valid_until = acquired_at + timing.ttl
        self._lost = False
        self._released = False
        self._renewal = spawn(self._keep_alive(), name=f"lock-renewal:{name}")

    def __repr__(self) -> str:
        return f"Held(name={self.name!r}, lost={self.lost})"

    @property
    def lost(self) -> bool:
        """True once exclusivity can no longer be trusted (a compare-and-set still can)."""
        return self._lost or self._now() >= self._valid_until

    async def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours; safe to call twice."""
        if self._released:
            return
        self._released = True
        self._renewal.cancel()
        await asyncio.wait([self._renewal])
        try:
            await self._drop()
        except Exception as failure:
            log.warning(
                "could not release a lock; it expires on its own",
                extra={"lock": self.name, "failure": type(failure).__name__},
            )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._timing.renew_every)
            sent_at = self._now()
            try:
                still_ours = await self._renew()
            except Exception as failure:
                # Any failure: we can no longer tell whether someone else holds it.
                log.warning(
                    "could not renew a lock; treating it as lost",
                    extra={"lock": self.name, "failure": type(failure).__name__},
                )
                still_ours = False
            if not still_ours:
                self._lost = True
                return
            self._valid_until = sent_at + self._timing.ttl


class RedisLock:
    """Leases in Redis under `{prefix}:lock:{name}`, one random owner token each."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ttl: float = DEFAULT_TTL,
        renew_every: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._timing = _Timing(ttl, renew_every)
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._renew_script = client.register_script(_REDIS_RENEW)
        self._release_script = client.register_script(_REDIS_RELEASE)

    def key(self, name: str) -> str:
        return f"{self._prefix}:lock:{name}"

    async def try_acquire(self, name: str) -> Held | None:
        """The lock, or None when someone else holds it; LockBackendDown if Redis is out."""
        key = self.key(name)
        token = secrets.token_hex(16)
        started = time.monotonic()
        acquired = await self._call(
            lambda: self._client.set(key, token, nx=True, px=self._timing.ttl_ms)
        )
        if not acquired:
            return None
        return Held(
            name,
            self._timing,
            renew=lambda: self._renew(key, token),
            drop=lambda: self._release(key, token),
            now=time.monotonic,
            acquired_at=started,
        )

    async def holder_exists(self, name: str) -> bool:
        key = self.key(name)
        return bool(await self._call(lambda: self._client.exists(key)))

    async def _renew(self, key: str, token: str) -> bool:
        # Renewal and release skip the breaker check: a held lease is worth one attempt
        # even right after someone else's call failed; their outcome still counts.
        renewed = await self._call(
            lambda: self._renew_script(keys=[key], args=[token, self._timing.ttl_ms]),
            gated=False,
        )
        return bool(renewed)

    async def _release(self, key: str, token: str) -> None:
        await self._call(lambda: self._release_script(keys=[key], args=[token]), gated=False)

    async def _call(self, operation: Callable[[], Awaitable[Any]], *, gated: bool = True) -> Any:
        if gated and not self.breaker.allow():
            raise LockBackendDown("redis skipped during its cool-down")
        try:
            result = await operation()
        except Exception as failure:
            # Not only RedisError/OSError: a connection broken mid-read can surface as a
            # RuntimeError from the client. Whatever Redis does, refresh falls back.
            self.breaker.record_failure()
            observer().redis_error("lock")
            raise LockBackendDown(f"redis unavailable ({type(failure).__name__})") from failure
        self.breaker.record_success()
        return result


class StoreLease:
    """Leases as rows of the store's `refresh_leases` table (SQLite and PostgreSQL alike).

    Errors of the store propagate: a store that is down is not something to fall back
    from. `clock` gives epoch milliseconds, shared by every process through the rows.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl: float = DEFAULT_TTL,
        renew_every: float | None = None,
        clock: Clock = now_ms,
    ) -> None:
        self._db = db
        self._timing = _Timing(ttl, renew_every)
        self._clock = clock

    async def try_acquire(self, name: str) -> Held | None:
        holder = secrets.token_hex(16)
        now = self._clock()
        row = await self._db.fetchrow(_STORE_ACQUIRE, name, holder, now + self._timing.ttl_ms, now)
        if row is None or row["holder"] != holder:
            return None
        return Held(
            name,
            self._timing,
            renew=lambda: self._renew(name, holder),
            drop=lambda: self._release(name, holder),
            now=self._seconds,
            acquired_at=now / 1000,
        )

    async def holder_exists(self, name: str) -> bool:
        return await self._db.fetchval(_STORE_HELD, name, self._clock()) is not None

    def _seconds(self) -> float:
        return self._clock() / 1000

    async def _renew(self, name: str, holder: str) -> bool:
        expires_at = self._clock() + self._timing.ttl_ms
        return await self._db.execute(_STORE_RENEW, expires_at, name, holder) == 1

    async def _release(self, name: str, holder: str) -> None:
        await self._db.execute(_STORE_RELEASE, name, holder)


class HeldPair(_ReleasedOnExit):
    """The Redis lease with the store lease behind it; the store lease is what excludes."""

    def __init__(self, gate: Held, lease: Held) -> None:
        self._gate = gate
        self._lease = lease
        self.name = lease.name

    def __repr__(self) -> str:
        return f"HeldPair(name={self.name!r}, lost={self.lost})"

    @property
    def lost(self) -> bool:
        # Losing only the Redis gate (Redis died) leaves exclusivity intact.
        return self._lease.lost

    async def release(self) -> None:
        await self._lease.release()
        await self._gate.release()


Lease = Held | HeldPair


class RefreshLocks:
    """The Redis lease, then the store lease behind it; the store lease alone without Redis."""

    def __init__(self, redis_lock: RedisLock | None, store_lease: StoreLease) -> None:
        self._redis = redis_lock
        self._store = store_lease
        self._fallback = redis_lock is None

    @property
    def using_fallback(self) -> bool:
        """Whether the last call found Redis unusable (always, without Redis)."""
        return self._fallback

    async def try_acquire(self, name: str) -> Lease | None:
        if self._redis is not None:
            try:
                gate = await self._redis.try_acquire(name)
            except LockBackendDown:
                self._switch(fallback=True)
            else:
                self._switch(fallback=False)
                return None if gate is None else await self._behind(gate, name)
        return await self._store.try_acquire(name)

    async def holder_exists(self, name: str) -> bool:
        if self._redis is not None:
            try:
                on_redis = await self._redis.holder_exists(name)
            except LockBackendDown:
                self._switch(fallback=True)
            else:
                self._switch(fallback=False)
                if on_redis:
                    return True
        return await self._store.holder_exists(name)

    async def _behind(self, gate: Held, name: str) -> HeldPair | None:
        try:
            lease = await self._store.try_acquire(name)
        except BaseException:
            await gate.release()
            raise
        if lease is None:
            # Someone took the store lease while Redis was out of their reach.
            await gate.release()
            return None
        return HeldPair(gate, lease)

    def _switch(self, *, fallback: bool) -> None:
        if fallback == self._fallback:
            return
        self._fallback = fallback
        if fallback:
            log.warning("redis unavailable; refresh locks use the store lease alone")
        else:
            log.info("redis is back; refresh locks take the redis lease first again")
