"""The activity log: one row per proxied request, kept for a bounded time.

Recording never touches the database on the request path. `ActivityLog.record` appends
to a bounded in-memory queue and returns; one background task drains the queue in
batches, one multi-row INSERT per batch. When the queue is full (the database is slow or
down) new entries are dropped and counted rather than making a request wait. The same
task applies retention now and then: rows older than the retention period go, and each
environment keeps at most its newest `max_rows_per_environment` rows.

Rows hold identifiers, timings and status only (no header, query value or body), and
are grouped by the caller's `Nango-Activity-Log-Id` when one was sent.
`list_activity` reads one connection's rows, newest first, with cursor pagination.
"""

# S608 flags SQL assembled with f-strings. Here only column names of this module and
# generated `$n` placeholders are assembled; every value travels as a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from credentials.config import read_bool, read_int
from credentials.database import Database, ForeignKeyViolation, Row, StoreUnavailable
from credentials.store import now_ms
from credentials.tasks import spawn

log = logging.getLogger("authgate.activity")

DEFAULT_RETENTION_DAYS = 7
DEFAULT_MAX_ROWS_PER_ENVIRONMENT = 100_000
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_BATCH_SIZE = 500
# Each row binds 14 parameters; PostgreSQL allows 32767 per statement.
MAX_BATCH_SIZE = 1000
DEFAULT_PRUNE_INTERVAL = 600.0
# Under load, entries wait this long for company so the store sees a few multi-row
# INSERTs per second rather than one per event-loop turn.
DEFAULT_LINGER_SECONDS = 0.25
# How long shutdown waits for queued entries to reach the database before giving up.
CLOSE_TIMEOUT = 5.0
DAY_MS = 86_400_000

Clock = Callable[[], int]


@dataclass(frozen=True, slots=True)
class ActivitySettings:
    """`AUTHGATE_ACTIVITY_LOG` (on by default), `AUTHGATE_ACTIVITY_RETENTION_DAYS`,
    `AUTHGATE_ACTIVITY_MAX_ROWS` (per environment) and `AUTHGATE_ACTIVITY_QUEUE_SIZE`."""

    enabled: bool = True
    retention_days: int = DEFAULT_RETENTION_DAYS
    max_rows_per_environment: int = DEFAULT_MAX_ROWS_PER_ENVIRONMENT
    queue_size: int = DEFAULT_QUEUE_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    prune_interval: float = DEFAULT_PRUNE_INTERVAL
    linger: float = DEFAULT_LINGER_SECONDS

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ActivitySettings:
        return cls(
            enabled=read_bool(environ, "AUTHGATE_ACTIVITY_LOG", True),
            retention_days=read_int(
                environ,
                "AUTHGATE_ACTIVITY_RETENTION_DAYS",
                DEFAULT_RETENTION_DAYS,
                minimum=1,
                maximum=3650,
            ),
            max_rows_per_environment=read_int(
                environ, "AUTHGATE_ACTIVITY_MAX_ROWS", DEFAULT_MAX_ROWS_PER_ENVIRONMENT, minimum=1
            ),
            queue_size=read_int(
                environ, "AUTHGATE_ACTIVITY_QUEUE_SIZE", DEFAULT_QUEUE_SIZE, minimum=1
            ),
        )


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    """One proxied request, as the proxy hands it over. Field order is column order."""

    environment_id: int
    provider_config_key: str
    connection_id: str
    activity_log_id: str | None
    request_id: str
    method: str
    host: str | None
    path: str
    status: int
    error_code: str | None
    upstream_ms: float
    overhead_ms: float
    retries: int


_ENTRY_COLUMNS = tuple(field.name for field in fields(ActivityEntry))
_COLUMNS = (*_ENTRY_COLUMNS, "created_at")


@dataclass(frozen=True, slots=True)
class ActivityRecord:
    """One stored row."""

    id: int
    activity_log_id: str | None
    request_id: str
    method: str
    host: str | None
    path: str
    status: int
    error_code: str | None
    upstream_ms: float
    overhead_ms: float
    retries: int
    created_at: int  # epoch ms


# --- the writer ------------------------------------------------------------------------------


class ActivityLog:
    """The asynchronous writer. `start` it inside the running loop, `close` it at shutdown.

    Counters (`accepted`, `dropped`, `written`, `failed`) only grow; `accepted` entries
    end up either `written` or `failed` (a batch the database refused or could not take).
    """

    def __init__(
        self,
        db: Database,
        settings: ActivitySettings | None = None,
        *,
        clock: Clock = now_ms,
    ) -> None:
        self.settings = settings or ActivitySettings()
        self._db = db
        self._clock = clock
        self._queue: deque[tuple[ActivityEntry, int]] = deque()
        self._wake = asyncio.Event()
        self._write_now = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._in_outage = False
        self.accepted = 0
        self.dropped = 0
        self.written = 0
        self.failed = 0

    @property
    def settled(self) -> int:
        return self.written + self.failed

    def record(self, entry: ActivityEntry) -> bool:
        """Queue one entry; never waits. False when it was dropped (queue full, closed)."""
        if self._closed or len(self._queue) >= self.settings.queue_size:
            self.dropped += 1
            return False
        self._queue.append((entry, self._clock()))
        self.accepted += 1
        self._wake.set()
        if len(self._queue) >= self.settings.batch_size:
            self._write_now.set()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = spawn(self._run(), name="activity-log-writer")

    async def flush(self) -> None:
        """Return once every entry accepted before this call is written (or failed)."""
        target = self.accepted
        if self._task is None or self._task.done():
            await self._drain()
            return
        self._wake.set()
        self._write_now.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self.settled >= target)

    async def prune(self) -> int:
        """Apply retention now; returns the number of rows deleted."""
        return await prune_activity(
            self._db,
            older_than=self._clock() - self.settings.retention_days * DAY_MS,
            max_rows_per_environment=self.settings.max_rows_per_environment,
        )

    async def close(self) -> None:
        """Write what is queued (waiting at most CLOSE_TIMEOUT), then stop the task."""
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.flush()
        except TimeoutError:
            log.warning("activity log: %d queued entries not written at shutdown", len(self._queue))
        finally:
            if self._task is not None:
                self._task.cancel()
                # wait() rather than await: the task's cancellation is not ours to raise.
                await asyncio.wait([self._task])

    async def _run(self) -> None:
        interval = self.settings.prune_interval
        next_prune = time.monotonic()
        while True:
            if not self._queue:
                try:
                    async with asyncio.timeout(max(next_prune - time.monotonic(), 0.0)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            await self._linger()
            await self._drain()
            if time.monotonic() >= next_prune:
                await self._prune_quietly()
                next_prune = time.monotonic() + interval

    async def _linger(self) -> None:
        if self._queue and not self._write_now.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.linger):
                    await self._write_now.wait()
        self._write_now.clear()

    async def _drain(self) -> None:
        while self._queue:
            count = batch_length(len(self._queue), self.settings.batch_size)
            batch = [self._queue.popleft() for _ in range(count)]
            await self._write(batch)
            async with self._progress:
                self._progress.notify_all()

    async def _write(self, batch: list[tuple[ActivityEntry, int]]) -> None:
        try:
            await self._db.execute(*insert_statement(batch))
        except ForeignKeyViolation:
            # An environment was deleted while its entries waited; keep everyone else's.
            await self._write_one_by_one(batch)
            return
        except StoreUnavailable:
            self.failed += len(batch)
            self._report_outage(len(batch))
            return
        except Exception:
            self.failed += len(batch)
            log.exception("activity log: a batch of %d entries could not be written", len(batch))
            return
        self.written += len(batch)
        self._in_outage = False

    async def _write_one_by_one(self, batch: list[tuple[ActivityEntry, int]]) -> None:
        for item in batch:
            try:
                await self._db.execute(*insert_statement([item]))
            except Exception:
                self.failed += 1
            else:
                self.written += 1

    def _report_outage(self, lost: int) -> None:
        # Once per outage: a down database would otherwise log a line per batch.
        if not self._in_outage:
            self._in_outage = True
            log.warning("activity log: database unreachable, %d entries dropped", lost)

    async def _prune_quietly(self) -> None:
        try:
            deleted = await self.prune()
        except StoreUnavailable:
            return  # the next round tries again; the writer already reports the outage
        except Exception:
            log.exception("activity log: retention failed")
            return
        if deleted:
            log.info("activity log: retention removed %d rows", deleted)


def batch_length(queued: int, batch_size: int) -> int:
    """How many queued entries the next INSERT takes: the largest of a few fixed sizes
    that fits. The databases cache a prepared statement per SQL text, and a handful of
    row counts means a handful of texts, instead of a new multi-row statement to parse
    for every batch."""
    for size in (batch_size, 100, 10):
        if size <= queued:
            return min(size, batch_size)
    return 1


# --- storage ---------------------------------------------------------------------------------


def insert_statement(batch: Sequence[tuple[ActivityEntry, int]]) -> tuple[Any, ...]:
    """One INSERT for the whole batch: the SQL, then its arguments."""
    args: list[Any] = []
    for entry, created_at in batch:
        args.extend(_entry_values(entry))
        args.append(created_at)
    return (_insert_sql(len(batch)), *args)


# Shallow, unlike dataclasses.astuple, which deep-copies every value.
_entry_values = operator.attrgetter(*_ENTRY_COLUMNS)


@functools.lru_cache(maxsize=16)
def _insert_sql(rows: int) -> str:
    width = len(_COLUMNS)
    groups = (
        "(" + ", ".join(f"${row * width + n + 1}" for n in range(width)) + ")"
        for row in range(rows)
    )
    return f"INSERT INTO activity_log ({', '.join(_COLUMNS)}) VALUES {', '.join(groups)}"


async def prune_activity(db: Database, *, older_than: int, max_rows_per_environment: int) -> int:
    """Delete rows created before `older_than` (epoch ms), then every environment's rows
    beyond its newest `max_rows_per_environment`. Returns the number deleted."""
    deleted = await db.execute("DELETE FROM activity_log WHERE created_at < $1", older_than)
    crowded = await db.fetch(
        "SELECT environment_id FROM activity_log GROUP BY environment_id HAVING COUNT(*) > $1",
        max_rows_per_environment,
    )
    for row in crowded:
        environment_id = row["environment_id"]
        # The newest row past the cap: it and everything older go.
        boundary = await db.fetchval(
            "SELECT id FROM activity_log WHERE environment_id = $1"
            " ORDER BY id DESC LIMIT 1 OFFSET $2",
            environment_id,
            max_rows_per_environment,
        )
        if boundary is not None:
            deleted += await db.execute(
                "DELETE FROM activity_log WHERE environment_id = $1 AND id <= $2",
                environment_id,
                boundary,
            )
    return deleted


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """Which rows of one connection to list. `status` is an exact code, `status_class`
    the hundreds digit (4 for 4xx); `before_id` is the cursor (rows with smaller ids)."""

    provider_config_key: str
    connection_id: str
    activity_log_id: str | None = None
    status: int | None = None
    status_class: int | None = None
    since: int | None = None  # epoch ms, inclusive
    before_id: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class ActivityPage:
    records: list[ActivityRecord]
    next_before_id: int | None  # the cursor of the next page; None on the last one


async def list_activity(db: Database, environment_id: int, query: ActivityQuery) -> ActivityPage:
    """One page of a connection's rows in one environment, newest first."""
    conditions = ["environment_id = $1", "provider_config_key = $2", "connection_id = $3"]
    args: list[Any] = [environment_id, query.provider_config_key, query.connection_id]

    def where(condition: str, *values: Any) -> None:
        numbers = [len(args) + n + 1 for n in range(len(values))]
        conditions.append(condition.format(*(f"${n}" for n in numbers)))
        args.extend(values)

    if query.activity_log_id is not None:
        where("activity_log_id = {}", query.activity_log_id)
    if query.status is not None:
        where("status = {}", query.status)
    if query.status_class is not None:
        where(
            "status >= {} AND status < {}", query.status_class * 100, query.status_class * 100 + 100
        )
    if query.since is not None:
        where("created_at >= {}", query.since)
    if query.before_id is not None:
        where("id < {}", query.before_id)
    args.append(query.limit + 1)  # one more than asked says whether a next page exists
    rows = await db.fetch(
        f"SELECT id, {', '.join(_RECORD_COLUMNS)} FROM activity_log"
        f" WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    records = [_record(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return ActivityPage(records, records[-1].id if more and records else None)


_RECORD_COLUMNS = tuple(field.name for field in fields(ActivityRecord) if field.name != "id")


def _record(row: Row) -> ActivityRecord:
    return ActivityRecord(
        id=int(row["id"]),
        activity_log_id=row["activity_log_id"],
        request_id=row["request_id"],
        method=row["method"],
        host=row["host"],
        path=row["path"],
        status=int(row["status"]),
        error_code=row["error_code"],
        upstream_ms=float(row["upstream_ms"]),
        overhead_ms=float(row["overhead_ms"]),
        retries=int(row["retries"]),
        created_at=int(row["created_at"]),
    )
