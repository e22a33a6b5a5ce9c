"""Connect sessions: short-lived tokens a product hands to its frontend (the Connect UI).

A token is `nango_connect_session_` + 64 lower-case hex characters (32 random bytes), the
form Nango issues. Only its SHA-256 is stored: 256 random bits are beyond brute force, so a
slow password hash would buy nothing and cost every lookup (the reasoning of secret keys).
A session lives 30 minutes. An expired session is refused, and expired rows are deleted
whenever they are met or a new session is created, so the table never grows unbounded.

The session remembers what it was created with (end user, tags, allowed integrations,
defaults, overrides, webhook override, and for a reconnect the connection it is bound
to), because the connection it later creates or re-authorises inherits them.
"""

# S608: the only SQL assembled here joins constant column lists; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from credentials.database import Database, Row
from credentials.models import Environment, JsonDict
from credentials.store import Clock, now_ms

TOKEN_PREFIX = "nango_connect_session_"  # noqa: S105 - a public prefix, not a secret
TOKEN_PATTERN = re.compile(r"nango_connect_session_[a-f0-9]{64}")
SESSION_TTL_MS = 30 * 60 * 1000

_COLUMNS = (
    "id",
    "environment_id",
    "end_user",
    "organization",
    "tags",
    "allowed_integrations",
    "integrations_config_defaults",
    "overrides",
    "webhook_url_override",
    "reconnect_integration",
    "reconnect_connection_id",
    "created_at",
    "expires_at",
)
_SELECT = ", ".join(f"s.{column}" for column in _COLUMNS)


@dataclass(frozen=True, slots=True)
class ReconnectTarget:
    """The existing connection a reconnect session re-authorises in place."""

    integration: str
    connection_id: str


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What a session is created with. `tags` None means "none given" (Nango keeps that
    apart from `{}`); `allowed_integrations` None means every integration."""

    end_user: JsonDict | None = None
    organization: JsonDict | None = None
    tags: dict[str, str] | None = None
    allowed_integrations: tuple[str, ...] | None = None
    integrations_config_defaults: JsonDict | None = None
    overrides: JsonDict | None = None
    webhook_url_override: str | None = None
    reconnect: ReconnectTarget | None = None


@dataclass(frozen=True, slots=True)
class ConnectSession:
    """A stored session (never its token). Times are epoch milliseconds."""

    id: int
    environment_id: int
    spec: SessionSpec
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session and its token: the only moment the token exists in clear."""

    token: str
    session: ConnectSession


@dataclass(frozen=True, slots=True)
class ResolvedSession:
    """A live session found by its token, with the environment it belongs to."""

    session: ConnectSession
    environment: Environment


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(32)


def is_well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class ConnectSessionStore:
    """Connect sessions in the store's database (SQLite or PostgreSQL).

    `clock` gives epoch milliseconds; tests inject one to expire sessions without waiting.
    """

    def __init__(
        self, db: Database, *, clock: Clock = now_ms, ttl_ms: int = SESSION_TTL_MS
    ) -> None:
        self._db = db
        self._clock = clock
        self._ttl_ms = ttl_ms

    async def create(self, environment_id: int, spec: SessionSpec) -> IssuedSession:
        await self.purge_expired()
        token = generate_token()
        now = self._clock()
        row = await self._db.fetchrow(
            "INSERT INTO connect_sessions (environment_id, token_hash, end_user, organization,"
            " tags, allowed_integrations, integrations_config_defaults, overrides,"
            " webhook_url_override, reconnect_integration, reconnect_connection_id,"
            " created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " RETURNING id",
            environment_id,
            hash_token(token),
            *_spec_columns(spec),
            now,
            now + self._ttl_ms,
        )
        if row is None:  # INSERT ... RETURNING always yields a row; this narrows the type
            raise RuntimeError("the database returned no row for a new connect session")
        session = ConnectSession(int(row["id"]), environment_id, spec, now, now + self._ttl_ms)
        return IssuedSession(token, session)

    async def resolve(self, token: str) -> ResolvedSession | None:
        """The live session the token names, or None (malformed, unknown or expired)."""
        if not is_well_formed(token):
            return None
        token_hash = hash_token(token)
        row = await self._db.fetchrow(
            f"SELECT {_SELECT}, s.token_hash, e.name AS environment_name"
            " FROM connect_sessions s JOIN environments e ON e.id = s.environment_id"
            " WHERE s.token_hash = $1",
            token_hash,
        )
        # The database matched on the hash already; compare again in constant time so no
        # code path here ever branches on a secret with a short-circuiting `==`.
        if row is None or not hmac.compare_digest(bytes(row["token_hash"]), token_hash):
            return None
        session = _session(row)
        if not await self._alive(session):
            return None
        environment = Environment(id=session.environment_id, name=row["environment_name"])
        return ResolvedSession(session, environment)

    async def get(self, environment_id: int, session_id: int) -> ConnectSession | None:
        row = await self._db.fetchrow(
            f"SELECT {_SELECT} FROM connect_sessions s WHERE s.id = $1 AND s.environment_id = $2",
            session_id,
            environment_id,
        )
        if row is None:
            return None
        session = _session(row)
        return session if await self._alive(session) else None

    async def delete(self, environment_id: int, session_id: int) -> bool:
        deleted = await self._db.execute(
            "DELETE FROM connect_sessions WHERE id = $1 AND environment_id = $2",
            session_id,
            environment_id,
        )
        return deleted > 0

    async def purge_expired(self) -> int:
        return await self._db.execute(
            "DELETE FROM connect_sessions WHERE expires_at <= $1", self._clock()
        )

    async def _alive(self, session: ConnectSession) -> bool:
        if session.expires_at > self._clock():
            return True
        # Met an expired session: drop it now rather than wait for the next creation.
        await self.delete(session.environment_id, session.id)
        return False


def _spec_columns(spec: SessionSpec) -> tuple[Any, ...]:
    reconnect = spec.reconnect
    allowed = None if spec.allowed_integrations is None else list(spec.allowed_integrations)
    return (
        _dumps_or_none(spec.end_user),
        _dumps_or_none(spec.organization),
        # The column is NOT NULL: "no tags given" is kept as the JSON text `null`.
        _dumps(spec.tags),
        _dumps_or_none(allowed),
        _dumps_or_none(spec.integrations_config_defaults),
        _dumps_or_none(spec.overrides),
        spec.webhook_url_override,
        None if reconnect is None else reconnect.integration,
        None if reconnect is None else reconnect.connection_id,
    )


def _session(row: Row) -> ConnectSession:
    allowed = _loads_or_none(row["allowed_integrations"])
    reconnect = None
    if row["reconnect_integration"] is not None and row["reconnect_connection_id"] is not None:
        reconnect = ReconnectTarget(row["reconnect_integration"], row["reconnect_connection_id"])
    spec = SessionSpec(
        end_user=_loads_or_none(row["end_user"]),
        organization=_loads_or_none(row["organization"]),
        tags=_loads_or_none(row["tags"]),
        allowed_integrations=None if allowed is None else tuple(allowed),
        integrations_config_defaults=_loads_or_none(row["integrations_config_defaults"]),
        overrides=_loads_or_none(row["overrides"]),
        webhook_url_override=row["webhook_url_override"],
        reconnect=reconnect,
    )
    return ConnectSession(
        id=int(row["id"]),
        environment_id=int(row["environment_id"]),
        spec=spec,
        created_at=int(row["created_at"]),
        expires_at=int(row["expires_at"]),
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _dumps_or_none(value: Mapping[str, Any] | list[Any] | None) -> str | None:
    return None if value is None else _dumps(value)


def _loads_or_none(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)
