"""A Redis tier of connection rows, shared by every process, holding ciphertext only.

With many proxy replicas, a process whose in-process cache is cold asks Redis (one
round trip) before the database. What Redis holds per connection is the connection row
and its integration's row exactly as stored: `credentials_enc` (and the integration's
client secret) stay the `ag1.` ciphertext tokens of the store, and each process
decrypts with its own keyring. The value is also sealed (an AES-GCM tag under the
keyring's first key over the rows, their generations and the key they are filed under),
so whoever can write to Redis can neither read credentials nor steer a proxied call by
editing a row's non-secret fields, such as the `connection_config` a base URL is built
from. A value this process cannot open (sealed under a key it does not have during a
key rotation, tampered, or of another format) counts as a miss.

Keys, with every name percent-encoded so a `:` inside an id cannot fake a separator:

    <prefix>:conn:<environment_id>:<provider_config_key>:<connection_id>      the value
    <prefix>:conn-gen:<environment_id>:<provider_config_key>:<connection_id>  its generation
    <prefix>:conn-gen:<environment_id>                                        the environment's

Invalidation protocol. A generation is a random token; a value records the connection
and environment generations it was filled under and is current only while both keys
still hold exactly those tokens (the read fetches all three keys in one MGET).

1. Reader: MGET value + both generations. A current value is a hit. Otherwise it
   remembers the generations it saw (absent ones included), reads the store, and fills
   through a Lua script that stores the value only if both generation keys still hold
   what it saw; an absent generation is created with a fresh token in the same script.
2. Writer: after its write commits, the process that wrote (and only it) replaces the
   connection's generation with a fresh token and deletes the value (a tombstone); an
   integration or environment change replaces the environment's generation instead,
   which retires every value of that environment at once.

A reader that read the store before a write can therefore never leave its older row
behind: if its fill comes after the tombstone the script refuses it (the generation
moved), and if it comes before, the tombstone retires it. A row's `version` cannot play
the generation's part: metadata, configuration and refresh-failure writes leave it
alone, and a deleted and re-created connection starts again at 1. Random tokens never
repeat, so a generation key that expired or was evicted can never make an old value
current again; a fill more than `MAX_FILL_WINDOW` seconds after its MGET is dropped, so
a generation key cannot expire inside a reader's window either (generations live for
twice the value TTL plus a minute, and every fill renews them).

Ordering. The tombstone is written before the change is published to other processes
(`publishing_after_invalidation` wraps the change hub's outbox): a process that drops
its in-process copy on the event and re-reads at once finds the tombstone, not the old
value. Within the writing process, until its tombstone is confirmed the tier is skipped
for the keys it covers.

Failure. Redis is an accelerator, never a dependency: a failed or timed-out read or
fill is skipped and the store answers; a circuit breaker keeps requests away from a
dead Redis, so an outage costs one timeout per cool-down. A tombstone that cannot be
written is retried in the background until it lands or every value it would retire has
expired anyway (value TTL plus the fill window); meanwhile this process skips the tier
for those keys, while other processes may serve the old value until it expires. A
writer that dies between its commit and its tombstone leaves the same bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis.asyncio as redis

from credentials.crypto import DecryptionError
from credentials.models import Connection, Integration
from credentials.observe import RedisOperation
from credentials.observe import current as observer
from credentials.redis_client import REDIS_FAILURES, CircuitBreaker
from credentials.store import ChangeEvent, CredentialsUnreadable, SealedRow, SqlStore
from credentials.tasks import spawn

log = logging.getLogger("authgate.connection_cache")

T = TypeVar("T")
ConnectionKey = tuple[int, str, str]
"""(environment_id, provider_config_key, connection_id)"""
Listener = Callable[[ChangeEvent], None]

DEFAULT_TTL = 300.0
# Longest time between a reader's MGET and its fill; older fills are dropped (see above).
MAX_FILL_WINDOW = 10.0
GENERATION_SLACK = 60.0
RETRY_FIRST_DELAY = 0.2
RETRY_MAX_DELAY = 5.0

FORMAT = 1
_SEAL_LABEL = b"authgate connection cache v1\x00"

# KEYS: value, connection generation, environment generation.
# ARGV: the connection and environment generations the reader saw ('' = absent), the
# ones to file the value under (the same, or fresh tokens where none existed), the
# value, its ttl in ms, the generations' ttl in ms.
_FILL = """
local connection = redis.call('GET', KEYS[2]) or ''
local environment = redis.call('GET', KEYS[3]) or ''
if connection ~= ARGV[1] or environment ~= ARGV[2] then
    return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[7])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[7])
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6])
return 1
"""


class TierUnavailable(Exception):
    """Redis failed, timed out, or is in its breaker's cool-down: use the store."""


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """What a proxied call needs from the store: the connection and its integration."""

    integration: Integration
    connection: Connection


@dataclass(frozen=True, slots=True)
class SealedRows:
    """The two rows as stored, secrets still encrypted."""

    integration: SealedRow
    connection: SealedRow


@dataclass(frozen=True, slots=True)
class Miss:
    """No current value: the generations a fill must still find, and when they were seen."""

    key: ConnectionKey
    connection_generation: str | None
    environment_generation: str | None
    observed_at: float


@dataclass(slots=True)
class CacheStats:
    """Counters of what the tier did in this process (for tests and diagnostics)."""

    hits: int = 0
    """Loads served from Redis."""
    misses: int = 0
    """Lookups that found no current value."""
    store_reads: int = 0
    """Loads that read the store (misses, skips and Redis failures)."""
    fills: int = 0
    refused_fills: int = 0
    """Fills refused because the connection changed since the lookup, or came too late."""
    unreadable: int = 0
    """Values this process could not open: unknown key, failed seal, unusable rows."""
    skipped: int = 0
    """Loads that did not ask Redis: breaker open, or a tombstone of ours in flight."""
    failures: int = 0
    """Redis calls that failed or timed out."""


@dataclass(frozen=True, slots=True)
class _Tombstone:
    generation_key: str
    value_key: str | None


@dataclass(frozen=True, slots=True)
class _Owed:
    """A tombstone that could not be written yet, for a change numbered `mark`."""

    tombstone: _Tombstone
    mark: int
    deadline: float


class ConnectionCache:
    def __init__(
        self,
        client: redis.Redis,
        store: SqlStore,
        *,
        prefix: str,
        ttl: float = DEFAULT_TTL,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._client = client
        self._store = store
        self._prefix = prefix
        self._ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._generation_ttl_ms = round((2 * ttl + GENERATION_SLACK) * 1000)
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._clock = clock
        self._fill_script = client.register_script(_FILL)
        self.stats = CacheStats()
        # Generation keys whose first tombstone attempt is still in flight, and those
        # whose tombstone failed and is retried: the tier is skipped for both.
        self._in_flight: Counter[str] = Counter()
        self._owed: dict[str, _Owed] = {}
        self._marks = itertools.count(1)
        self._attempts: set[asyncio.Task[None]] = set()
        self._retrier: asyncio.Task[None] | None = None

    # --- keys ----------------------------------------------------------------------------

    def value_key(self, key: ConnectionKey) -> str:
        return f"{self._prefix}:conn:{_names(key)}"

    def generation_key(self, key: ConnectionKey) -> str:
        return f"{self._prefix}:conn-gen:{_names(key)}"

    def environment_generation_key(self, environment_id: int) -> str:
        return f"{self._prefix}:conn-gen:{environment_id}"

    # --- reads ---------------------------------------------------------------------------

    async def load(self, key: ConnectionKey) -> ConnectionRecord | None:
        """The connection and its integration, from Redis when it holds a current value,
        else from the store (filling Redis). None when either does not exist.

        Raises what the store raises (`StoreUnavailable`, `CredentialsUnreadable`),
        never a Redis error.
        """
        if self._has_own_change_in_flight(key):
            self.stats.skipped += 1
            observer().cache_lookup("redis", "skipped")
            return await self._from_store(key, None)
        try:
            found = await self.lookup(key)
        except TierUnavailable:
            return await self._from_store(key, None)
        if isinstance(found, ConnectionRecord):
            return found
        return await self._from_store(key, found)

    async def lookup(self, key: ConnectionKey) -> ConnectionRecord | Miss:
        """One round trip: the current value, opened, or what a fill must still find."""
        if not self.breaker.allow():
            self.stats.skipped += 1
            observer().cache_lookup("redis", "skipped")
            raise TierUnavailable
        observed_at = self._clock()
        try:
            value, connection_generation, environment_generation = await self._guarded(
                self._client.mget(
                    self.value_key(key),
                    self.generation_key(key),
                    self.environment_generation_key(key[0]),
                ),
                "cache_read",
            )
        except TierUnavailable:
            observer().cache_lookup("redis", "error")
            raise
        miss = Miss(key, _text(connection_generation), _text(environment_generation), observed_at)
        record = None if value is None else self._open_value(key, value, miss)
        if record is None:
            self.stats.misses += 1
            observer().cache_lookup("redis", "miss")
            return miss
        self.stats.hits += 1
        observer().cache_lookup("redis", "hit")
        return record

    async def read_rows(self, key: ConnectionKey) -> SealedRows | None:
        """Both rows from the store, still sealed; None when either does not exist."""
        self.stats.store_reads += 1
        observer().store_read()
        environment_id, provider_config_key, connection_id = key
        integration = await self._store.get_integration_sealed(environment_id, provider_config_key)
        if integration is None:
            return None
        connection = await self._store.get_connection_sealed(
            environment_id, provider_config_key, connection_id
        )
        return None if connection is None else SealedRows(integration, connection)

    def open(self, rows: SealedRows) -> ConnectionRecord:
        """Decrypt both rows with this process's keyring; raises `CredentialsUnreadable`."""
        return ConnectionRecord(
            self._store.open_sealed_integration(rows.integration),
            self._store.open_sealed(rows.connection),
        )

    async def fill(self, miss: Miss, rows: SealedRows) -> bool:
        """Store `rows` unless the connection or its environment changed since `miss`."""
        if self._clock() - miss.observed_at > MAX_FILL_WINDOW:
            self.stats.refused_fills += 1
            return False
        if self._has_own_change_in_flight(miss.key) or not self.breaker.allow():
            return False
        connection_generation = miss.connection_generation or _fresh_generation()
        environment_generation = miss.environment_generation or _fresh_generation()
        payload = orjson.dumps(
            {
                "generations": [connection_generation, environment_generation],
                "integration": rows.integration,
                "connection": rows.connection,
            }
        ).decode("utf-8")
        value = orjson.dumps([FORMAT, self._seal(miss.key, payload), payload])
        try:
            stored = await self._guarded(
                self._fill_script(
                    keys=[
                        self.value_key(miss.key),
                        self.generation_key(miss.key),
                        self.environment_generation_key(miss.key[0]),
                    ],
                    args=[
                        miss.connection_generation or "",
                        miss.environment_generation or "",
                        connection_generation,
                        environment_generation,
                        value,
                        self._ttl_ms,
                        self._generation_ttl_ms,
                    ],
                ),
                "cache_fill",
            )
        except TierUnavailable:
            return False
        if stored:
            self.stats.fills += 1
        else:
            self.stats.refused_fills += 1
        return bool(stored)

    async def _from_store(self, key: ConnectionKey, miss: Miss | None) -> ConnectionRecord | None:
        rows = await self.read_rows(key)
        if rows is None:
            return None
        # Opened before filling: a row this process cannot read is not worth sharing.
        record = self.open(rows)
        if miss is not None:
            await self.fill(miss, rows)
        return record

    def _open_value(
        self, key: ConnectionKey, value: bytes | str, current: Miss
    ) -> ConnectionRecord | None:
        payload = _payload(value)
        if payload is None:
            self.stats.unreadable += 1
            return None
        try:
            self._store.keyring.decrypt(payload[0], self._seal_aad(key, payload[1]))
        except DecryptionError:
            self.stats.unreadable += 1
            return None
        try:
            entry = orjson.loads(payload[1])
            seen = [current.connection_generation, current.environment_generation]
            if entry["generations"] != seen:
                return None  # retired by a change since it was filled
            return self.open(SealedRows(entry["integration"], entry["connection"]))
        except (CredentialsUnreadable, KeyError, TypeError, ValueError):
            # Credentials under a key we lack, or rows of another schema version.
            self.stats.unreadable += 1
            return None

    def _seal(self, key: ConnectionKey, payload: str) -> str:
        # GCM over an empty plaintext: a tag authenticating the associated data only.
        return self._store.keyring.encrypt(b"", self._seal_aad(key, payload))

    def _seal_aad(self, key: ConnectionKey, payload: str) -> bytes:
        return _SEAL_LABEL + self.value_key(key).encode() + b"\x00" + payload.encode()

    async def _guarded(self, call: Awaitable[T], operation: RedisOperation) -> T:
        try:
            result = await call
        except REDIS_FAILURES as failure:
            self.breaker.record_failure()
            self.stats.failures += 1
            observer().redis_error(operation)
            log.warning(
                "connection cache unavailable; reading the store",
                extra={"failure": type(failure).__name__},
            )
            raise TierUnavailable from None
        self.breaker.record_success()
        return result

    # --- invalidation --------------------------------------------------------------------

    def on_local_change(self, event: ChangeEvent) -> None:
        """Store listener: tombstone what a write of this process made stale."""
        self._invalidate(event, None)

    def publishing_after_invalidation(self, publish: Listener) -> Listener:
        """`publish`, called only once the event's tombstone was written (or failed).

        Other processes drop their in-process copy when the event reaches them and
        re-read at once; an event that overtook its tombstone would have them re-read
        the old value from Redis and keep it for their whole in-process TTL.
        """

        def invalidate_then_publish(event: ChangeEvent) -> None:
            self._invalidate(event, publish)

        return invalidate_then_publish

    async def drain(self) -> None:
        """Wait until every first tombstone attempt started so far has finished."""
        while self._attempts:
            await asyncio.gather(*self._attempts, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)

    def _invalidate(self, event: ChangeEvent, then: Listener | None) -> None:
        tombstones = self._tombstones(event)
        if not tombstones:
            if then is not None:
                then(event)
            return
        mark = next(self._marks)
        # Counted before this returns: a load in this process from now on skips the tier.
        self._in_flight.update(tombstone.generation_key for tombstone in tombstones)
        task = spawn(self._first_attempt(tombstones, mark, event, then), name="tombstone")
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    def _tombstones(self, event: ChangeEvent) -> list[_Tombstone]:
        environment_id = event.environment_id
        if event.kind == "connection" and event.provider_config_key and event.connection_id:
            key = (environment_id, event.provider_config_key, event.connection_id)
            return [_Tombstone(self.generation_key(key), self.value_key(key))]
        if event.kind == "secret_key":
            return []  # keys select an environment; no connection or integration row changed
        return [_Tombstone(self.environment_generation_key(environment_id), None)]

    async def _first_attempt(
        self, tombstones: list[_Tombstone], mark: int, event: ChangeEvent, then: Listener | None
    ) -> None:
        try:
            written = await self._write_tombstones(tombstones)
        finally:
            self._in_flight.subtract(tombstone.generation_key for tombstone in tombstones)
            self._in_flight = +self._in_flight  # drops the keys that reached zero
        if written:
            self._settle(tombstones, mark)
        else:
            self._owe(tombstones, mark)
        if then is not None:
            then(event)

    def _settle(self, tombstones: Iterable[_Tombstone], mark: int) -> None:
        """A tombstone written after change `mark` committed also covers older changes."""
        for tombstone in tombstones:
            owed = self._owed.get(tombstone.generation_key)
            if owed is not None and owed.mark < mark:
                del self._owed[tombstone.generation_key]

    def _owe(self, tombstones: Iterable[_Tombstone], mark: int) -> None:
        # Every value filled before the change was committed is gone by this deadline.
        deadline = self._clock() + self._ttl + MAX_FILL_WINDOW
        for tombstone in tombstones:
            owed = self._owed.get(tombstone.generation_key)
            # Attempts can fail out of order: keep the newest change, which only a
            # tombstone written after it can settle.
            if owed is None or owed.mark < mark:
                self._owed[tombstone.generation_key] = _Owed(tombstone, mark, deadline)
        if self._retrier is None:
            self._retrier = spawn(self._retry_owed(), name="tombstone-retry")

    async def _retry_owed(self) -> None:
        delay = RETRY_FIRST_DELAY
        try:
            while self._owed:
                await asyncio.sleep(delay)
                now = self._clock()
                for name in [name for name, owed in self._owed.items() if owed.deadline <= now]:
                    del self._owed[name]
                batch = dict(self._owed)
                if not batch:
                    break
                if await self._write_tombstones(owed.tombstone for owed in batch.values()):
                    for name, owed in batch.items():
                        if self._owed.get(name) is owed:
                            del self._owed[name]
                    delay = RETRY_FIRST_DELAY
                else:
                    delay = min(delay * 2, RETRY_MAX_DELAY)
        finally:
            self._retrier = None

    async def _write_tombstones(self, tombstones: Iterable[_Tombstone]) -> bool:
        """One transaction; deliberately not gated by the breaker: it runs in the
        background, where a timeout costs no request, and a skipped tombstone would
        leave an old value current."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for tombstone in tombstones:
                    pipe.set(
                        tombstone.generation_key, _fresh_generation(), px=self._generation_ttl_ms
                    )
                    if tombstone.value_key is not None:
                        pipe.delete(tombstone.value_key)
                await pipe.execute()
        except REDIS_FAILURES as failure:
            self.breaker.record_failure()
            self.stats.failures += 1
            observer().redis_error("cache_invalidate")
            log.warning(
                "could not retire a cached connection; retrying",
                extra={"failure": type(failure).__name__},
            )
            return False
        self.breaker.record_success()
        return True

    def _has_own_change_in_flight(self, key: ConnectionKey) -> bool:
        names = (self.generation_key(key), self.environment_generation_key(key[0]))
        return any(name in self._in_flight or name in self._owed for name in names)


def _names(key: ConnectionKey) -> str:
    environment_id, provider_config_key, connection_id = key
    return f"{environment_id}:{_escape(provider_config_key)}:{_escape(connection_id)}"


def _escape(name: str) -> str:
    # Encodes ':' and '%' too, so the encoding is injective and ids cannot collide.
    return urllib.parse.quote(name, safe="")


def _fresh_generation() -> str:
    return secrets.token_hex(16)


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return value


def _payload(value: bytes | str) -> tuple[str, str] | None:
    """(seal, payload text) of a value in this module's format, or None."""
    try:
        decoded: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, list) or len(decoded) != 3 or decoded[0] != FORMAT:
        return None
    _, seal, payload = decoded
    if not isinstance(seal, str) or not isinstance(payload, str):
        return None
    return seal, payload
