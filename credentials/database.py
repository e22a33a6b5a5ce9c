"""One small async database interface over SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQL is written once, with PostgreSQL's `$1, $2` placeholders; the SQLite driver rewrites
them to SQLite's numbered `?1, ?2`, which bind from a tuple the same way. Rows come back
as plain dicts in both dialects, and constraint failures surface as our own
`UniqueViolation` / `ForeignKeyViolation`, so nothing above this module imports a driver.

A database that cannot be reached (refused or lost connection, server shutting down, no
pooled connection within `ACQUIRE_TIMEOUT_S`, SQLite file that cannot be opened or read)
surfaces as `StoreUnavailable`, whose message names neither the DSN nor a password.
Genuine SQL errors keep their own types. The PostgreSQL pool heals by itself: a
connection found closed is replaced on the next acquire.

SQLite runs on one connection. An asyncio lock serialises statements so that one task's
transaction never interleaves with another task's statements on the shared connection;
WAL mode keeps other processes' readers unblocked while a write is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite
import asyncpg

from credentials.observe import StoreOperation
from credentials.observe import current as observer

Dialect = Literal["sqlite", "postgres"]
Row = Mapping[str, Any]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")
SQLITE_BUSY_TIMEOUT_MS = 5000
# How long a statement may wait for a pooled PostgreSQL connection, connecting included:
# a dead server fails a request after this long instead of hanging it.
ACQUIRE_TIMEOUT_S = 5.0

_SQLITE_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
# Primary result codes (extended names start with them, e.g. SQLITE_IOERR_WRITE) that
# mean the file cannot be used right now, as opposed to a statement being wrong.
_SQLITE_UNAVAILABLE_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_FULL")
# Connection-level failures of PostgreSQL: refused, reset or lost connections (OSError
# covers TimeoutError, hence a timed-out acquire), SQLSTATE class 08, and a server that
# is starting, shutting down or out of connection slots.
_POSTGRES_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
# Quoted literals and identifiers are matched first so a `$1` inside them stays untouched.
_PLACEHOLDER = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|\$(\d+)""")


class IntegrityViolation(Exception):
    """A write broke a constraint the schema enforces (either dialect)."""


class UniqueViolation(IntegrityViolation):
    """An INSERT or UPDATE broke a unique constraint."""


class ForeignKeyViolation(IntegrityViolation):
    """A row referenced a parent that does not exist (e.g. deleted concurrently)."""


class StoreUnavailable(Exception):
    """The database cannot be reached right now; trying again later may succeed.

    Every write authgate makes is one statement or one transaction, so a write that
    failed this way was applied whole or not at all (not at all, unless the connection
    died after the server committed but before it answered). The message names the
    dialect and the failure's type only, never the DSN, a password or a value.
    """

    def __init__(self, dialect: Dialect, failure: BaseException | str) -> None:
        reason = failure if isinstance(failure, str) else type(failure).__name__
        super().__init__(f"the {_DIALECT_NAMES[dialect]} database is unreachable ({reason})")
        self.dialect = dialect


_DIALECT_NAMES: dict[Dialect, str] = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


class Executor(Protocol):
    """What can run SQL: a database, or the handle inside one of its transactions."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it affected."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None when there is no row."""
        ...


class Database(Executor, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """Commit on normal exit, roll back on any exception (cancellation included)."""
        ...

    async def close(self) -> None: ...


async def open_database(url: str, *, pool_max_size: int = 10) -> Database:
    """Open `sqlite:///PATH`, `sqlite:///:memory:` or a `postgresql://` DSN.

    Unknown query parameters of a PostgreSQL DSN become server settings, so
    `?search_path=schema` selects a schema.
    """
    if url.startswith(SQLITE_PREFIX):
        return await SqliteDatabase.open(url[len(SQLITE_PREFIX) :])
    if url.startswith(POSTGRES_PREFIXES):
        return await PostgresDatabase.open(url, max_size=pool_max_size)
    raise ValueError("database URL must start with sqlite:/// or postgresql://")


# --- SQLite -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def to_sqlite_placeholders(sql: str) -> str:
    """`$1` becomes `?1`; placeholders inside quotes are left alone."""
    return _PLACEHOLDER.sub(lambda m: f"?{m[1]}" if m[1] else m[0], sql)


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


def _unicode_lower(value: Any) -> Any:
    # SQLite's built-in lower() folds ASCII only; PostgreSQL folds all of Unicode.
    # Overriding it keeps case-insensitive search identical in both dialects.
    return value.lower() if isinstance(value, str) else value


@asynccontextmanager
async def _sqlite_errors(operation: StoreOperation = "query") -> AsyncIterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorname in _SQLITE_UNIQUE_ERRORS:
            raise UniqueViolation(str(exc)) from exc
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            raise ForeignKeyViolation(str(exc)) from exc
        raise
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname.startswith(_SQLITE_UNAVAILABLE_ERRORS):
            observer().store_error(operation)
            # from None: the driver's message may carry the file path.
            raise StoreUnavailable("sqlite", exc.sqlite_errorname) from None
        raise


async def _run(conn: aiosqlite.Connection, sql: str) -> None:
    # Closing the cursor finalises the statement; a PRAGMA's unread result row would
    # otherwise keep it active and block later connection-level changes.
    async with conn.execute(sql):
        pass


class _SqliteSession:
    """Runs statements on the connection; callers hold the database lock."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    async def execute(self, sql: str, *args: Any) -> int:
        async with _sqlite_errors(), self._conn.execute(to_sqlite_placeholders(sql), args) as cur:
            return max(cur.rowcount, 0)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with _sqlite_errors():
            rows = await self._conn.execute_fetchall(to_sqlite_placeholders(sql), args)
        return list(rows)  # type: ignore[arg-type]  # _dict_row makes every row a dict

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))


async def _connect_sqlite(path: str) -> aiosqlite.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions on its own;
    # ours begin with BEGIN IMMEDIATE so writers queue up front instead of deadlocking.
    connecting = aiosqlite.connect(path, isolation_level=None)
    try:
        return await connecting
    except BaseException:
        # On a failed connect aiosqlite tells its worker thread to stop but does not wait
        # for it; a thread that outlives the event loop dies with "Event loop is closed".
        await asyncio.to_thread(connecting._thread.join)
        raise


class SqliteDatabase:
    """One aiosqlite connection in autocommit mode; transactions are explicit."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._session = _SqliteSession(conn)
        self._lock = asyncio.Lock()
        self._tx_owner: asyncio.Task[Any] | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            observer().store_error("connect")
            raise StoreUnavailable("sqlite", exc) from None
        async with _sqlite_errors("connect"):
            conn = await _connect_sqlite(path)
            # aiosqlite annotates row_factory as a type; sqlite3 accepts any such callable.
            conn.row_factory = _dict_row  # type: ignore[assignment]
            try:
                await cls._configure(conn, in_memory=path == ":memory:")
            except BaseException:
                await conn.close()
                raise
        return cls(conn)

    @staticmethod
    async def _configure(conn: aiosqlite.Connection, *, in_memory: bool) -> None:
        await conn.create_function("lower", 1, _unicode_lower, deterministic=True)
        await _run(conn, f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        await _run(conn, "PRAGMA foreign_keys = ON")
        if not in_memory:
            await _run(conn, "PRAGMA journal_mode = WAL")

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[_SqliteSession]:
        if self._tx_owner is not None and self._tx_owner is asyncio.current_task():
            # The lock is not re-entrant: waiting on it here would hang forever.
            raise RuntimeError("inside db.transaction(), run SQL on the transaction handle")
        async with self._lock:
            yield self._session

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._exclusive() as session:
            return await session.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._exclusive() as session:
            return await session.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._exclusive() as session:
            return await session.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._exclusive() as session:
            return await session.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._exclusive() as session:
            self._tx_owner = asyncio.current_task()
            try:
                async with _sqlite_errors("transaction"):
                    await _run(self._conn, "BEGIN IMMEDIATE")
                try:
                    yield session
                except BaseException:
                    await self._rollback()
                    raise
                await self._commit()
            finally:
                self._tx_owner = None

    async def _commit(self) -> None:
        try:
            async with _sqlite_errors("transaction"):
                await _run(self._conn, "COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _rollback(self) -> None:
        # The single worker thread runs statements in order, so even if this await is
        # cancelled the ROLLBACK still runs before any later statement on the connection.
        # OperationalError: SQLite already rolled back on its own (e.g. after SQLITE_FULL).
        with contextlib.suppress(sqlite3.OperationalError):
            await _run(self._conn, "ROLLBACK")

    async def close(self) -> None:
        await self._conn.close()


# --- PostgreSQL -------------------------------------------------------------------------


@asynccontextmanager
async def _postgres_errors(operation: StoreOperation = "query") -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise ForeignKeyViolation(str(exc)) from exc
    except asyncpg.InterfaceError as exc:
        # Most interface errors are our bugs (wrong argument count, ...); a closed pool
        # or connection is the one that means "unreachable".
        if not _is_closed_error(exc):
            raise
        observer().store_error(operation)
        raise StoreUnavailable("postgres", exc) from None
    except _POSTGRES_UNAVAILABLE_ERRORS as exc:
        observer().store_error(operation)
        # from None: a connection error's text and context may carry the DSN.
        raise StoreUnavailable("postgres", exc) from None


def _is_closed_error(exc: asyncpg.InterfaceError) -> bool:
    message = str(exc)
    return "is closed" in message or "is closing" in message


async def _roll_back(transaction: Any) -> None:
    # A dead connection took its transaction with it (the server rolls back); the
    # error that made us roll back is the one worth raising, not this one.
    with contextlib.suppress(StoreUnavailable):
        async with _postgres_errors("transaction"):
            await transaction.rollback()


def _affected_rows(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3" or "INSERT 0 1".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PostgresSession:
    """Runs statements on one connection (pooled, or a transaction's)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return "postgres"

    async def execute(self, sql: str, *args: Any) -> int:
        async with _postgres_errors():
            status: str = await self._conn.execute(sql, *args)
        return _affected_rows(status)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with _postgres_errors():
            records = await self._conn.fetch(sql, *args)
        return [dict(record) for record in records]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with _postgres_errors():
            record = await self._conn.fetchrow(sql, *args)
        return None if record is None else dict(record)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with _postgres_errors():
            return await self._conn.fetchval(sql, *args)


class PostgresDatabase:
    """An asyncpg pool; every statement borrows a connection for as long as it runs."""

    def __init__(self, pool: Any, *, acquire_timeout: float = ACQUIRE_TIMEOUT_S) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @classmethod
    async def open(
        cls, dsn: str, *, max_size: int, acquire_timeout: float = ACQUIRE_TIMEOUT_S
    ) -> PostgresDatabase:
        async with _postgres_errors("connect"):
            # `timeout` bounds each connection attempt, at start-up and on reconnects.
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_size, timeout=acquire_timeout
            )
        return cls(pool, acquire_timeout=acquire_timeout)

    @property
    def dialect(self) -> Dialect:
        return "postgres"

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        # Acquiring reconnects a pooled connection that was found closed, so the pool
        # recovers on its own once the server is back. Only the pool's own steps are
        # translated here: what the caller's block raises stays the caller's.
        async with _postgres_errors("connect"):
            conn = await self._pool.acquire(timeout=self._acquire_timeout)
        try:
            yield conn
        finally:
            async with _postgres_errors("connect"):
                await self._pool.release(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._connection() as conn:
            return await _PostgresSession(conn).execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._connection() as conn:
            return await _PostgresSession(conn).fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._connection() as conn:
            return await _PostgresSession(conn).fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await _PostgresSession(conn).fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._connection() as conn:
            transaction = conn.transaction()
            async with _postgres_errors("transaction"):
                await transaction.start()
            try:
                yield _PostgresSession(conn)
            except BaseException:
                await _roll_back(transaction)
                raise
            # A connection lost at COMMIT is an outage too; the server rolls back a
            # transaction whose connection died, so nothing is left half-written.
            async with _postgres_errors("transaction"):
                await transaction.commit()

    async def close(self) -> None:
        await self._pool.close()
