"""The durable store: environments, secret keys, integrations, connections, variables.

This is the only module that writes SQL for these entities. Every method is scoped to an
environment, so a secret key (which selects exactly one environment) can only ever reach
that environment's rows. Secrets are encrypted with the keyring before they reach the
database and decrypted on the way out; the associated data binds each ciphertext to its
owner, so a row copied under another environment or connection does not decrypt.

Writes to integrations, connections, secret keys and environments notify subscribers
after they commit, so in-process caches (and later a Redis bridge) can drop stale entries.
"""

# S608 flags every SQL string assembled with + or f-strings. Here they are assembled only
# from constants in this module and generated `$n` placeholders; values always travel as
# bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from credentials.connection_filter import ConnectionFilter, SqlParams
from credentials.crypto import DecryptionError, Keyring
from credentials.database import (
    Database,
    Executor,
    ForeignKeyViolation,
    Row,
    UniqueViolation,
    open_database,
)
from credentials.migrations import migrate
from credentials.models import Connection, Environment, Integration, JsonDict, RefreshState

logger = logging.getLogger(__name__)

ChangeKind = Literal["integration", "connection", "secret_key", "environment"]
Listener = Callable[["ChangeEvent"], None]
Clock = Callable[[], int]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Unchanged(enum.Enum):
    UNCHANGED = "UNCHANGED"


UNCHANGED = _Unchanged.UNCHANGED
"""Default of the optional arguments of update methods: leave this field as it is."""

Unchanged = Literal[_Unchanged.UNCHANGED]

SealedRow = dict[str, Any]
"""A row exactly as stored (secrets still encrypted), every value a JSON scalar."""


class StoreError(Exception):
    """Base class of the errors the store raises on purpose."""


class AlreadyExists(StoreError):
    """A name or key that must be unique is taken."""


class NotFound(StoreError):
    """A row the write depends on does not exist (any more)."""


class CredentialsUnreadable(StoreError):
    """A stored secret failed to decrypt: wrong key, tampered row, or row moved to another
    owner. The message names the owner and the failure, never key material or plaintext.
    """

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"credentials of {subject} cannot be decrypted: {reason}")
        self.subject = subject
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """Something cached may be stale.

    An `integration` event also covers every connection under that integration (a delete
    cascades to them; a rename changes their provider_config_key). `provider_config_key`
    and `connection_id` are None when the event is about a whole environment or key.
    """

    kind: ChangeKind
    environment_id: int
    provider_config_key: str | None = None
    connection_id: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            [self.kind, self.environment_id, self.provider_config_key, self.connection_id]
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> ChangeEvent:
        kind, environment_id, provider_config_key, connection_id = orjson.loads(data)
        return cls(kind, environment_id, provider_config_key, connection_id)


# --- associated data: who owns a ciphertext ----------------------------------------------


def connection_aad(environment_id: int, integration_id: int, connection_id: str) -> bytes:
    return f"connection:{environment_id}:{integration_id}:{connection_id}".encode()


def integration_aad(environment_id: int) -> bytes:
    return f"integration:{environment_id}".encode()


def variable_aad(environment_id: int, name: str) -> bytes:
    return f"environment_variable:{environment_id}:{name}".encode()


def environment_settings_aad(environment_id: int, field: str) -> bytes:
    return f"environment-settings:{environment_id}:{field}".encode()


def oauth_session_aad(environment_id: int, session_id: str) -> bytes:
    return f"oauth-session:{environment_id}:{session_id}".encode()


# --- row helpers -------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_datetime(epoch_ms: int) -> datetime:
    # Integer arithmetic: a float division could be off by a microsecond.
    return _EPOCH + timedelta(milliseconds=epoch_ms)


def to_datetime_or_none(epoch_ms: int | None) -> datetime | None:
    return None if epoch_ms is None else to_datetime(epoch_ms)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _dumps_or_none(value: Any) -> str | None:
    return None if value is None else _dumps(value)


def _loads_or_none(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


_INTEGRATION_COLUMNS = (
    "id, environment_id, unique_key, provider, display_name, forward_webhooks, "
    "credentials_enc, custom_enc, created_at, updated_at"
)
_CONNECTION_FIELDS = (
    "id",
    "environment_id",
    "integration_id",
    "connection_id",
    "credentials_enc",
    "connection_config",
    "metadata",
    "tags",
    "end_user",
    "version",
    "created_at",
    "updated_at",
    "last_fetched_at",
    "webhook_url_override",
    "refresh_failures",
    "refresh_error",
    "refresh_retry_at",
    "needs_reauth",
    "last_refresh_at",
)
_SELECT_CONNECTION = (
    "SELECT "
    + ", ".join(f"c.{name}" for name in _CONNECTION_FIELDS)
    + ", i.unique_key AS provider_config_key, i.provider AS provider"
    " FROM connections c JOIN integrations i ON i.id = c.integration_id"
)
# RETURNING cannot join, so the integration's two columns come from correlated subqueries.
_RETURNING_CONNECTION = (
    " RETURNING "
    + ", ".join(_CONNECTION_FIELDS)
    + ", (SELECT unique_key FROM integrations WHERE integrations.id = connections.integration_id)"
    " AS provider_config_key"
    ", (SELECT provider FROM integrations WHERE integrations.id = connections.integration_id)"
    " AS provider"
)
# New credentials (a re-authorisation, an import) start the refresh lifecycle afresh.
_HEALTHY_REFRESH_STATE = (
    " refresh_failures = 0, refresh_error = NULL, refresh_retry_at = NULL, needs_reauth = FALSE"
)
# Locates one connection by its public names, given $1 environment, $2 key, $3 id.
_LOCATE_CONNECTION = (
    " WHERE environment_id = $1 AND connection_id = $3 AND integration_id ="
    " (SELECT id FROM integrations WHERE environment_id = $1 AND unique_key = $2)"
)


# Metadata writes name their rows with one array parameter: a JSON array read by
# json_each on SQLite, a native array on PostgreSQL (whose statements bind at most 32767
# parameters, so a list of placeholders would cap the number of ids).
_LOCK_METADATA = {
    # CROSS JOIN fixes SQLite's join order: each wanted id is one unique-index lookup.
    "sqlite": (
        "SELECT c.id, c.connection_id, c.metadata FROM json_each($3) AS wanted"
        " CROSS JOIN connections c ON c.connection_id = wanted.value"
        " WHERE c.environment_id = $1 AND c.integration_id ="
        " (SELECT id FROM integrations WHERE environment_id = $1 AND unique_key = $2)"
    ),
    # Rows are locked in byte order of their ids, one global order, so two bulk writers
    # with overlapping lists cannot deadlock.
    "postgres": (
        "SELECT c.id, c.connection_id, c.metadata FROM connections c"
        " JOIN unnest($3::text[]) AS wanted(connection_id)"
        " ON wanted.connection_id = c.connection_id"
        " WHERE c.environment_id = $1 AND c.integration_id ="
        " (SELECT id FROM integrations WHERE environment_id = $1 AND unique_key = $2)"
        ' ORDER BY c.connection_id COLLATE "C" FOR UPDATE OF c'
    ),
}
_SET_METADATA = {
    "sqlite": (
        "UPDATE connections SET metadata = new.value FROM json_each($1) AS new"
        " WHERE connections.id = CAST(new.key AS INTEGER)"
    ),
    "postgres": (
        "UPDATE connections SET metadata = new.metadata"
        " FROM unnest($1::bigint[], $2::text[]) AS new(id, metadata)"
        " WHERE connections.id = new.id"
    ),
}


async def _locked_metadata(
    tx: Executor, environment_id: int, provider_config_key: str, connection_ids: list[str]
) -> dict[str, tuple[int, Any]]:
    """connection_id → (row id, stored metadata) of the listed connections that exist,
    locked for the rest of the transaction."""
    ids: Any = _dumps(connection_ids) if tx.dialect == "sqlite" else connection_ids
    rows = await tx.fetch(_LOCK_METADATA[tx.dialect], environment_id, provider_config_key, ids)
    return {row["connection_id"]: (int(row["id"]), _loads_or_none(row["metadata"])) for row in rows}


async def _set_metadata(tx: Executor, written: dict[int, str]) -> None:
    """Row id → new metadata text, in one statement."""
    if not written:
        return
    if tx.dialect == "sqlite":
        await tx.execute(_SET_METADATA["sqlite"], _dumps({str(k): v for k, v in written.items()}))
    else:
        await tx.execute(_SET_METADATA["postgres"], list(written), list(written.values()))


class SqlStore:
    """Environment-scoped access to everything authgate keeps durably."""

    def __init__(self, db: Database, keyring: Keyring, *, clock: Clock = now_ms) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._listeners: list[Listener] = []

    @property
    def db(self) -> Database:
        return self._db

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def clock(self) -> int:
        """Now, in epoch milliseconds (the store's clock, replaceable in tests)."""
        return self._clock()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        """Raises when the database cannot answer; for readiness checks."""
        await self._db.fetchval("SELECT 1")

    # --- change notifications ------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _emit(self, *events: ChangeEvent) -> None:
        for event in events:
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    # The write has committed; a broken cache hook must not turn it into
                    # an error for the caller.
                    logger.exception("change listener failed for %s event", event.kind)

    # --- environments and secret keys ----------------------------------------------------

    async def create_environment(self, name: str) -> Environment:
        try:
            row = await self._db.fetchrow(
                "INSERT INTO environments (name, created_at) VALUES ($1, $2) RETURNING id, name",
                name,
                self._clock(),
            )
        except UniqueViolation:
            raise AlreadyExists(f"environment {name!r} already exists") from None
        environment = _environment(_required(row))
        self._emit(ChangeEvent("environment", environment.id))
        return environment

    async def get_environment(self, name: str) -> Environment | None:
        row = await self._db.fetchrow("SELECT id, name FROM environments WHERE name = $1", name)
        return None if row is None else _environment(row)

    async def get_environment_by_id(self, environment_id: int) -> Environment | None:
        row = await self._db.fetchrow(
            "SELECT id, name FROM environments WHERE id = $1", environment_id
        )
        return None if row is None else _environment(row)

    async def list_environments(self) -> list[Environment]:
        rows = await self._db.fetch("SELECT id, name FROM environments ORDER BY id")
        return [_environment(row) for row in rows]

    async def add_secret_key(self, environment_id: int, key_hash: bytes, label: str = "") -> None:
        try:
            await self._db.execute(
                "INSERT INTO secret_keys (environment_id, key_hash, label, created_at)"
                " VALUES ($1, $2, $3, $4)",
                environment_id,
                key_hash,
                label,
                self._clock(),
            )
        except UniqueViolation:
            raise AlreadyExists("this secret key is already registered") from None
        except ForeignKeyViolation:
            raise NotFound(f"environment {environment_id} does not exist") from None
        self._emit(ChangeEvent("secret_key", environment_id))

    async def find_environment_by_key_hash(self, key_hash: bytes) -> Environment | None:
        """The environment an active (not revoked) key belongs to."""
        row = await self._db.fetchrow(
            "SELECT e.id, e.name FROM secret_keys k JOIN environments e"
            " ON e.id = k.environment_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            key_hash,
        )
        return None if row is None else _environment(row)

    async def revoke_secret_key(self, key_hash: bytes) -> bool:
        row = await self._db.fetchrow(
            "UPDATE secret_keys SET revoked_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL"
            " RETURNING environment_id",
            key_hash,
            self._clock(),
        )
        if row is None:
            return False
        self._emit(ChangeEvent("secret_key", int(row["environment_id"])))
        return True

    async def count_secret_keys(self, environment_id: int) -> int:
        """Active (not revoked) keys of the environment."""
        count = await self._db.fetchval(
            "SELECT COUNT(*) FROM secret_keys WHERE environment_id = $1 AND revoked_at IS NULL",
            environment_id,
        )
        return int(count)

    # --- integrations --------------------------------------------------------------------

    async def create_integration(
        self,
        environment_id: int,
        *,
        unique_key: str,
        provider: str,
        display_name: str | None = None,
        forward_webhooks: bool = True,
        credentials: JsonDict | None = None,
        custom: dict[str, str] | None = None,
    ) -> Integration:
        now = self._clock()
        try:
            row = await self._db.fetchrow(
                "INSERT INTO integrations (environment_id, unique_key, provider, display_name,"
                " forward_webhooks, credentials_enc, custom_enc, created_at, updated_at)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {_INTEGRATION_COLUMNS}",
                environment_id,
                unique_key,
                provider,
                display_name,
                forward_webhooks,
                self._seal_integration(environment_id, credentials),
                self._seal_integration(environment_id, custom),
                now,
            )
        except UniqueViolation:
            raise AlreadyExists(f"integration {unique_key!r} already exists") from None
        except ForeignKeyViolation:
            raise NotFound(f"environment {environment_id} does not exist") from None
        self._emit(ChangeEvent("integration", environment_id, unique_key))
        return self._integration(_required(row))

    async def get_integration(self, environment_id: int, unique_key: str) -> Integration | None:
        row = await self._db.fetchrow(
            f"SELECT {_INTEGRATION_COLUMNS} FROM integrations"
            " WHERE environment_id = $1 AND unique_key = $2",
            environment_id,
            unique_key,
        )
        return None if row is None else self._integration(row)

    async def get_integration_sealed(
        self, environment_id: int, unique_key: str
    ) -> SealedRow | None:
        """The integration's row as stored, its secrets still encrypted; None if absent.

        For caches that must hold ciphertext only: every value is a JSON scalar, and
        `open_sealed_integration` turns the row into an `Integration`.
        """
        row = await self._db.fetchrow(
            f"SELECT {_INTEGRATION_COLUMNS} FROM integrations"
            " WHERE environment_id = $1 AND unique_key = $2",
            environment_id,
            unique_key,
        )
        return None if row is None else dict(row)

    def open_sealed_integration(self, row: Row) -> Integration:
        """Decrypt a row from `get_integration_sealed`; raises `CredentialsUnreadable`."""
        return self._integration(row)

    async def list_integrations(self, environment_id: int) -> list[Integration]:
        rows = await self._db.fetch(
            f"SELECT {_INTEGRATION_COLUMNS} FROM integrations WHERE environment_id = $1"
            " ORDER BY provider, created_at, id",
            environment_id,
        )
        return [self._integration(row) for row in rows]

    async def update_integration(
        self,
        environment_id: int,
        unique_key: str,
        *,
        new_unique_key: str | Unchanged = UNCHANGED,
        display_name: str | Unchanged | None = UNCHANGED,
        forward_webhooks: bool | Unchanged = UNCHANGED,
        credentials: JsonDict | Unchanged | None = UNCHANGED,
        custom: dict[str, str] | Unchanged | None = UNCHANGED,
    ) -> Integration | None:
        """Change the given fields; None when the integration does not exist."""
        changes: dict[str, Any] = {}
        if new_unique_key is not UNCHANGED:
            changes["unique_key"] = new_unique_key
        if display_name is not UNCHANGED:
            changes["display_name"] = display_name
        if forward_webhooks is not UNCHANGED:
            changes["forward_webhooks"] = forward_webhooks
        if credentials is not UNCHANGED:
            changes["credentials_enc"] = self._seal_integration(environment_id, credentials)
        if custom is not UNCHANGED:
            changes["custom_enc"] = self._seal_integration(environment_id, custom)
        if not changes:
            return await self.get_integration(environment_id, unique_key)
        row = await self._update_integration_row(environment_id, unique_key, changes)
        if row is None:
            return None
        integration = self._integration(row)
        self._emit(*self._integration_events(environment_id, unique_key, integration.unique_key))
        return integration

    async def _update_integration_row(
        self, environment_id: int, unique_key: str, changes: dict[str, Any]
    ) -> Row | None:
        params = SqlParams(environment_id, unique_key)
        assignments = [f"{column} = {params.add(value)}" for column, value in changes.items()]
        assignments.append(f"updated_at = {params.add(self._clock())}")
        try:
            return await self._db.fetchrow(
                f"UPDATE integrations SET {', '.join(assignments)}"
                " WHERE environment_id = $1 AND unique_key = $2"
                f" RETURNING {_INTEGRATION_COLUMNS}",
                *params.args,
            )
        except UniqueViolation:
            raise AlreadyExists(f"integration {changes['unique_key']!r} already exists") from None

    @staticmethod
    def _integration_events(environment_id: int, old_key: str, new_key: str) -> list[ChangeEvent]:
        events = [ChangeEvent("integration", environment_id, old_key)]
        if new_key != old_key:
            events.append(ChangeEvent("integration", environment_id, new_key))
        return events

    async def delete_integration(self, environment_id: int, unique_key: str) -> bool:
        """Delete the integration and, by cascade, all of its connections."""
        deleted = await self._db.execute(
            "DELETE FROM integrations WHERE environment_id = $1 AND unique_key = $2",
            environment_id,
            unique_key,
        )
        if deleted:
            self._emit(ChangeEvent("integration", environment_id, unique_key))
        return deleted > 0

    # --- connections ---------------------------------------------------------------------

    async def upsert_connection(
        self,
        environment_id: int,
        integration: Integration,
        *,
        connection_id: str,
        credentials: JsonDict,
        connection_config: JsonDict | None = None,
        metadata: JsonDict | None = None,
        tags: Mapping[str, str] | None = None,
        end_user: JsonDict | None = None,
        webhook_url_override: str | None = None,
    ) -> Connection:
        """Insert, or overwrite every field of the existing connection (version + 1).

        An empty `webhook_url_override` is stored as None: `""` means "no override".
        """
        if integration.environment_id != environment_id:
            raise NotFound(f"integration {integration.unique_key!r} is not in this environment")
        sealed = self._keyring.encrypt_json(
            credentials, connection_aad(environment_id, integration.id, connection_id)
        )
        try:
            row = await self._db.fetchrow(
                "INSERT INTO connections (environment_id, integration_id, connection_id,"
                " credentials_enc, connection_config, metadata, tags, end_user,"
                " webhook_url_override, version, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, 1, $9, $9)"
                " ON CONFLICT (integration_id, connection_id) DO UPDATE SET"
                " credentials_enc = excluded.credentials_enc,"
                " connection_config = excluded.connection_config,"
                " metadata = excluded.metadata, tags = excluded.tags,"
                " end_user = excluded.end_user,"
                " webhook_url_override = excluded.webhook_url_override,"
                " version = connections.version + 1, last_refresh_at = NULL,"
                + _HEALTHY_REFRESH_STATE
                + ","
                " updated_at = excluded.updated_at" + _RETURNING_CONNECTION,
                environment_id,
                integration.id,
                connection_id,
                sealed,
                _dumps(connection_config or {}),
                _dumps_or_none(metadata),
                _dumps(dict(tags or {})),
                _dumps_or_none(end_user),
                self._clock(),
                webhook_url_override or None,
            )
        except ForeignKeyViolation:
            raise NotFound(f"integration {integration.unique_key!r} does not exist") from None
        self._emit(ChangeEvent("connection", environment_id, integration.unique_key, connection_id))
        return self._connection(_required(row))

    async def get_connection(
        self, environment_id: int, provider_config_key: str, connection_id: str
    ) -> Connection | None:
        row = await self._db.fetchrow(
            _SELECT_CONNECTION
            + " WHERE c.environment_id = $1 AND i.unique_key = $2 AND c.connection_id = $3",
            environment_id,
            provider_config_key,
            connection_id,
        )
        return None if row is None else self._connection(row)

    async def get_connection_sealed(
        self, environment_id: int, provider_config_key: str, connection_id: str
    ) -> SealedRow | None:
        """The connection's row as stored, `credentials_enc` still encrypted; None if absent.

        For caches that must hold ciphertext only: every value is a JSON scalar, and
        `open_sealed` turns the row into a `Connection` (the encryption's associated data
        binds the credentials to the row's environment, integration and connection id).
        """
        row = await self._db.fetchrow(
            _SELECT_CONNECTION
            + " WHERE c.environment_id = $1 AND i.unique_key = $2 AND c.connection_id = $3",
            environment_id,
            provider_config_key,
            connection_id,
        )
        return None if row is None else dict(row)

    def open_sealed(self, row: Row) -> Connection:
        """Decrypt a row from `get_connection_sealed`; raises `CredentialsUnreadable`."""
        return self._connection(row)

    async def list_connections(
        self,
        environment_id: int,
        *,
        provider_config_key: str | Sequence[str] | None = None,
        connection_id: str | None = None,
        search: str | None = None,
        end_user_id: str | None = None,
        end_user_organization_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        offset: int = 0,
        include_credentials: bool = True,
    ) -> list[Connection]:
        """Newest first (created_at, then id, descending), as Nango lists them.

        `provider_config_key` may be several keys (any matches); `tags` must all match.
        With `include_credentials=False` nothing is decrypted and `credentials` is `{}`:
        list views never show credentials, and one unreadable row must not break them.
        """
        keys = _as_keys(provider_config_key)
        if keys == ():
            return []  # "any of no integrations" matches nothing
        filters = ConnectionFilter(
            provider_config_keys=keys,
            connection_id=connection_id,
            search=search,
            end_user_id=end_user_id,
            end_user_organization_id=end_user_organization_id,
            tags=tuple((tags or {}).items()),
        )
        rows = await self._fetch_connections(environment_id, filters, limit, offset)
        return [self._connection(row, decrypt=include_credentials) for row in rows]

    async def _fetch_connections(
        self, environment_id: int, filters: ConnectionFilter, limit: int, offset: int
    ) -> list[Row]:
        params = SqlParams(environment_id)
        conditions = ["c.environment_id = $1", *filters.where(self._db.dialect, params)]
        sql = (
            f"{_SELECT_CONNECTION} WHERE {' AND '.join(conditions)}"
            f" ORDER BY c.created_at DESC, c.id DESC"
            f" LIMIT {params.add(limit)} OFFSET {params.add(offset)}"
        )
        return await self._db.fetch(sql, *params.args)

    async def delete_connection(
        self, environment_id: int, provider_config_key: str, connection_id: str
    ) -> bool:
        deleted = await self._db.execute(
            "DELETE FROM connections" + _LOCATE_CONNECTION,
            environment_id,
            provider_config_key,
            connection_id,
        )
        if deleted:
            self._emit(
                ChangeEvent("connection", environment_id, provider_config_key, connection_id)
            )
        return deleted > 0

    async def update_connection_fields(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        *,
        metadata: JsonDict | Unchanged | None = UNCHANGED,
        tags: Mapping[str, str] | Unchanged = UNCHANGED,
        end_user: JsonDict | Unchanged | None = UNCHANGED,
        connection_config: JsonDict | Unchanged = UNCHANGED,
        webhook_url_override: str | Unchanged | None = UNCHANGED,
    ) -> Connection | None:
        """Replace the given non-secret fields; credentials and version are untouched.

        An empty `webhook_url_override` clears the override, like None.
        """
        changes: dict[str, str | None] = {}
        if metadata is not UNCHANGED:
            changes["metadata"] = _dumps_or_none(metadata)
        if tags is not UNCHANGED:
            changes["tags"] = _dumps(dict(tags))
        if end_user is not UNCHANGED:
            changes["end_user"] = _dumps_or_none(end_user)
        if connection_config is not UNCHANGED:
            changes["connection_config"] = _dumps(connection_config)
        if webhook_url_override is not UNCHANGED:
            changes["webhook_url_override"] = webhook_url_override or None
        if not changes:
            return await self.get_connection(environment_id, provider_config_key, connection_id)
        params = SqlParams(environment_id, provider_config_key, connection_id)
        assignments = [f"{column} = {params.add(value)}" for column, value in changes.items()]
        assignments.append(f"updated_at = {params.add(self._clock())}")
        row = await self._db.fetchrow(
            f"UPDATE connections SET {', '.join(assignments)}"
            + _LOCATE_CONNECTION
            + _RETURNING_CONNECTION,
            *params.args,
        )
        if row is None:
            return None
        self._emit(ChangeEvent("connection", environment_id, provider_config_key, connection_id))
        return self._connection(row)

    async def write_metadata(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_ids: Sequence[str],
        metadata: JsonDict,
        *,
        merge: bool,
    ) -> list[str]:
        """Replace (or, with `merge`, shallow-merge into) the metadata of every listed
        connection, all or nothing: when any is missing nothing is written and the
        missing ids are returned, in the order given.

        One transaction holds the rows from read to write (row locks on PostgreSQL, the
        write lock on SQLite), so concurrent merges each see the other's keys. The ids
        travel as one array parameter, so any number of them takes two statements. Like
        Nango, a metadata write leaves `updated_at` alone.
        """
        wanted = list(dict.fromkeys(connection_ids))
        async with self._db.transaction() as tx:
            current = await _locked_metadata(tx, environment_id, provider_config_key, wanted)
            missing = [connection_id for connection_id in wanted if connection_id not in current]
            if missing:
                return missing
            written = {
                row_id: _dumps(
                    {**(stored if merge and isinstance(stored, dict) else {}), **metadata}
                )
                for row_id, stored in current.values()
            }
            await _set_metadata(tx, written)
        self._emit(
            *(
                ChangeEvent("connection", environment_id, provider_config_key, connection_id)
                for connection_id in wanted
            )
        )
        return []

    async def update_credentials(
        self,
        connection: Connection,
        credentials: JsonDict,
        *,
        expected_version: int,
        connection_config: JsonDict | Unchanged = UNCHANGED,
    ) -> Connection | None:
        """Compare-and-set: write only if the stored version is still `expected_version`.

        A successful write is a successful refresh: the failure state is cleared and
        `last_refresh_at` set. Returns the updated connection (version + 1), or None when
        another writer got there first (or the connection is gone); the caller should
        re-read and decide again, so a newer rotated refresh token is never overwritten
        by an older one.
        """
        sealed = self._keyring.encrypt_json(
            credentials,
            connection_aad(
                connection.environment_id, connection.integration_id, connection.connection_id
            ),
        )
        params = SqlParams(sealed, self._clock(), connection.id, connection.environment_id)
        extra = ""
        if connection_config is not UNCHANGED:
            extra = f", connection_config = {params.add(_dumps(connection_config))}"
        row = await self._db.fetchrow(
            "UPDATE connections SET credentials_enc = $1, version = version + 1,"
            f" updated_at = $2, last_refresh_at = $2,{_HEALTHY_REFRESH_STATE}{extra}"
            " WHERE id = $3 AND environment_id = $4"
            f" AND version = {params.add(expected_version)}" + _RETURNING_CONNECTION,
            *params.args,
        )
        return self._changed_connection(row)

    async def record_refresh_failure(
        self,
        connection: Connection,
        *,
        error: str,
        needs_reauth: bool,
        retry_at: int | None,
    ) -> Connection | None:
        """Record a failed refresh, only if the credentials are still `connection.version`.

        A failure seen with credentials another process has since replaced says nothing
        about the new ones, so it is not recorded (None is returned; re-read instead).
        The version is not bumped: the credentials did not change.
        """
        row = await self._db.fetchrow(
            "UPDATE connections SET refresh_failures = refresh_failures + 1,"
            " refresh_error = $1, needs_reauth = $2, refresh_retry_at = $3"
            " WHERE id = $4 AND environment_id = $5 AND version = $6" + _RETURNING_CONNECTION,
            error,
            needs_reauth,
            retry_at,
            connection.id,
            connection.environment_id,
            connection.version,
        )
        return self._changed_connection(row)

    def _changed_connection(self, row: Row | None) -> Connection | None:
        if row is None:
            return None
        updated = self._connection(row)
        self._emit(
            ChangeEvent(
                "connection",
                updated.environment_id,
                updated.provider_config_key,
                updated.connection_id,
            )
        )
        return updated

    async def touch_last_fetched(self, connection: Connection) -> datetime:
        """Record that the credentials were handed out; returns the time recorded.

        Deliberately emits no change event: it is bookkeeping, and invalidating caches
        on every read would defeat them.
        """
        now = self._clock()
        await self._db.execute(
            "UPDATE connections SET last_fetched_at = $1 WHERE id = $2 AND environment_id = $3",
            now,
            connection.id,
            connection.environment_id,
        )
        return to_datetime(now)

    # --- environment variables -----------------------------------------------------------

    async def set_environment_variable(self, environment_id: int, name: str, value: str) -> None:
        sealed = self._keyring.encrypt(value.encode("utf-8"), variable_aad(environment_id, name))
        await self._db.execute(
            "INSERT INTO environment_variables (environment_id, name, value_enc)"
            " VALUES ($1, $2, $3) ON CONFLICT (environment_id, name)"
            " DO UPDATE SET value_enc = excluded.value_enc",
            environment_id,
            name,
            sealed,
        )

    async def delete_environment_variable(self, environment_id: int, name: str) -> bool:
        deleted = await self._db.execute(
            "DELETE FROM environment_variables WHERE environment_id = $1 AND name = $2",
            environment_id,
            name,
        )
        return deleted > 0

    async def list_environment_variables(self, environment_id: int) -> list[tuple[str, str]]:
        rows = await self._db.fetch(
            "SELECT name, value_enc FROM environment_variables WHERE environment_id = $1"
            " ORDER BY name",
            environment_id,
        )
        return [(row["name"], self._open_variable(environment_id, row)) for row in rows]

    # --- key rotation --------------------------------------------------------------------

    async def reencrypt_all(self, *, batch_size: int = 500) -> int:
        """Re-encrypt every secret not written under the keyring's first key.

        Each row is rewritten with a compare-and-set on its old ciphertext, so a concurrent
        write always wins and nothing is lost. Values do not change, so no events fire.
        A row that does not decrypt is logged and skipped rather than aborting the run.
        Returns the number of values re-encrypted.
        """
        total = await self._reencrypt_connections(batch_size)
        total += await self._reencrypt_integrations(batch_size)
        total += await self._reencrypt_variables(batch_size)
        total += await self._reencrypt_environment_settings()
        total += await self._reencrypt_oauth_sessions()
        return total

    async def _reencrypt_connections(self, batch_size: int) -> int:
        count, last_id = 0, 0
        while rows := await self._db.fetch(
            "SELECT id, environment_id, integration_id, connection_id, credentials_enc"
            " FROM connections WHERE id > $1 ORDER BY id LIMIT $2",
            last_id,
            batch_size,
        ):
            last_id = int(rows[-1]["id"])
            for row in rows:
                aad = connection_aad(
                    int(row["environment_id"]), int(row["integration_id"]), row["connection_id"]
                )
                count += await self._rewrap("connections", "credentials_enc", row, aad)
        return count

    async def _reencrypt_integrations(self, batch_size: int) -> int:
        count, last_id = 0, 0
        while rows := await self._db.fetch(
            "SELECT id, environment_id, credentials_enc, custom_enc FROM integrations"
            " WHERE id > $1 ORDER BY id LIMIT $2",
            last_id,
            batch_size,
        ):
            last_id = int(rows[-1]["id"])
            for row in rows:
                aad = integration_aad(int(row["environment_id"]))
                count += await self._rewrap("integrations", "credentials_enc", row, aad)
                count += await self._rewrap("integrations", "custom_enc", row, aad)
        return count

    async def _reencrypt_variables(self, batch_size: int) -> int:
        count, last = 0, (0, "")
        while rows := await self._db.fetch(
            "SELECT environment_id, name, value_enc FROM environment_variables"
            " WHERE (environment_id, name) > ($1, $2) ORDER BY environment_id, name LIMIT $3",
            *last,
            batch_size,
        ):
            last = (int(rows[-1]["environment_id"]), rows[-1]["name"])
            for row in rows:
                aad = variable_aad(int(row["environment_id"]), row["name"])
                count += await self._rewrap_variable(row, aad)
        return count

    async def _reencrypt_environment_settings(self) -> int:
        # One row per environment: few enough to read at once.
        count = 0
        for row in await self._db.fetch(
            "SELECT environment_id, webhook_secret_enc, hmac_key_enc FROM environment_settings"
        ):
            environment_id = int(row["environment_id"])
            for column in ("webhook_secret_enc", "hmac_key_enc"):
                aad = environment_settings_aad(environment_id, column.removesuffix("_enc"))
                where = f"environment_settings.{column} of environment {environment_id}"
                fresh = self._rewrapped(row[column], aad, where)
                if fresh is not None:
                    count += await self._db.execute(
                        f"UPDATE environment_settings SET {column} = $1"
                        f" WHERE environment_id = $2 AND {column} = $3",
                        fresh,
                        environment_id,
                        row[column],
                    )
        return count

    async def _reencrypt_oauth_sessions(self) -> int:
        # Short-lived (an hour at most) and deleted when used: few rows at any time.
        count = 0
        for row in await self._db.fetch(
            "SELECT id, environment_id, secrets_enc FROM oauth_sessions"
        ):
            aad = oauth_session_aad(int(row["environment_id"]), row["id"])
            count += await self._rewrap("oauth_sessions", "secrets_enc", row, aad)
        return count

    def _rewrapped(self, token: str | None, aad: bytes, where: str) -> str | None:
        """A fresh token under the primary key, or None when there is nothing to do."""
        if token is None or not self._keyring.needs_reencryption(token):
            return None
        try:
            return self._keyring.encrypt(self._keyring.decrypt(token, aad), aad)
        except DecryptionError as exc:
            logger.warning("cannot re-encrypt %s: %s", where, exc)
            return None

    async def _rewrap(self, table: str, column: str, row: Row, aad: bytes) -> int:
        token: str | None = row[column]
        fresh = self._rewrapped(token, aad, f"{table}.{column} of row {row['id']}")
        if fresh is None:
            return 0
        return await self._db.execute(
            f"UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3",
            fresh,
            row["id"],
            token,
        )

    async def _rewrap_variable(self, row: Row, aad: bytes) -> int:
        token: str = row["value_enc"]
        where = f"environment variable {row['name']!r} of environment {row['environment_id']}"
        fresh = self._rewrapped(token, aad, where)
        if fresh is None:
            return 0
        return await self._db.execute(
            "UPDATE environment_variables SET value_enc = $1"
            " WHERE environment_id = $2 AND name = $3 AND value_enc = $4",
            fresh,
            row["environment_id"],
            row["name"],
            token,
        )

    # --- decoding ------------------------------------------------------------------------

    def _seal_integration(self, environment_id: int, value: Mapping[str, Any] | None) -> str | None:
        if value is None:
            return None
        return self._keyring.encrypt_json(value, integration_aad(environment_id))

    def _integration(self, row: Row) -> Integration:
        environment_id = int(row["environment_id"])
        subject = f"integration {row['unique_key']!r} in environment {environment_id}"
        aad = integration_aad(environment_id)
        return Integration(
            id=int(row["id"]),
            environment_id=environment_id,
            unique_key=row["unique_key"],
            provider=row["provider"],
            display_name=row["display_name"],
            forward_webhooks=bool(row["forward_webhooks"]),
            credentials=self._open_json(row["credentials_enc"], aad, subject),
            custom=self._open_json(row["custom_enc"], aad, subject),
            created_at=to_datetime(row["created_at"]),
            updated_at=to_datetime(row["updated_at"]),
        )

    def _connection(self, row: Row, *, decrypt: bool = True) -> Connection:
        environment_id = int(row["environment_id"])
        credentials: JsonDict = {}
        if decrypt:
            credentials = self._open_connection_credentials(row)
        return Connection(
            id=int(row["id"]),
            environment_id=environment_id,
            integration_id=int(row["integration_id"]),
            provider_config_key=row["provider_config_key"],
            provider=row["provider"],
            connection_id=row["connection_id"],
            credentials=credentials,
            connection_config=orjson.loads(row["connection_config"]),
            metadata=_loads_or_none(row["metadata"]),
            tags=orjson.loads(row["tags"]),
            end_user=_loads_or_none(row["end_user"]),
            version=int(row["version"]),
            created_at=to_datetime(row["created_at"]),
            updated_at=to_datetime(row["updated_at"]),
            last_fetched_at=to_datetime_or_none(row["last_fetched_at"]),
            webhook_url_override=row["webhook_url_override"],
            refresh=RefreshState(
                failures=int(row["refresh_failures"]),
                error=row["refresh_error"],
                retry_at=row["refresh_retry_at"],
                needs_reauth=bool(row["needs_reauth"]),
                last_refresh_at=row["last_refresh_at"],
            ),
        )

    def _open_connection_credentials(self, row: Row) -> JsonDict:
        subject = (
            f"connection {row['connection_id']!r} of integration"
            f" {row['provider_config_key']!r} in environment {row['environment_id']}"
        )
        aad = connection_aad(
            int(row["environment_id"]), int(row["integration_id"]), row["connection_id"]
        )
        credentials: JsonDict = self._open_json(row["credentials_enc"], aad, subject)
        return credentials

    def _open_json(self, token: str | None, aad: bytes, subject: str) -> Any:
        if token is None:
            return None
        try:
            return self._keyring.decrypt_json(token, aad)
        except DecryptionError as exc:
            raise CredentialsUnreadable(subject, str(exc)) from None

    def _open_variable(self, environment_id: int, row: Row) -> str:
        name: str = row["name"]
        try:
            plaintext = self._keyring.decrypt(row["value_enc"], variable_aad(environment_id, name))
        except DecryptionError as exc:
            subject = f"environment variable {name!r} in environment {environment_id}"
            raise CredentialsUnreadable(subject, str(exc)) from None
        return plaintext.decode("utf-8")


async def open_store(database_url: str, keyring: Keyring, *, clock: Clock = now_ms) -> SqlStore:
    """Open the database, bring its schema up to date, and wrap it in a store."""
    db = await open_database(database_url)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return SqlStore(db, keyring, clock=clock)


def _as_keys(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _environment(row: Row) -> Environment:
    return Environment(id=int(row["id"]), name=row["name"])


def _required(row: Row | None) -> Row:
    # INSERT ... RETURNING always yields a row; this only narrows the type.
    if row is None:
        raise StoreError("the database returned no row for a write")
    return row


__all__ = [
    "UNCHANGED",
    "AlreadyExists",
    "ChangeEvent",
    "ChangeKind",
    "CredentialsUnreadable",
    "NotFound",
    "SealedRow",
    "SqlStore",
    "StoreError",
    "open_store",
]
