"""Authorisations in progress: one row per browser sent to a provider, keyed by `state`.

The id of a row is the OAuth `state` the provider hands back on the callback, so it
must be unguessable: 32 random bytes, URL-safe (Nango uses a UUID v1, which is not).
A row lives an hour. `take` deletes and returns it in one statement, so a state can be
redeemed once, even by two callbacks racing; an expired row is refused (and is gone
by then too). Expired rows left behind by abandoned flows are purged whenever a new
flow starts.

What a flow must keep secret until its callback (the PKCE verifier, the OAuth 1.0a
request token and its secret, client-credential overrides from the browser) is sealed
with the keyring, bound to the row's environment and id. So is the end user the
connection will be linked to: a connect session may expire before the user comes back
from the provider, and its end user, tags and webhook override are needed then.
"""

# S608: the only SQL assembled here joins constant column names; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

import orjson

from credentials.crypto import DecryptionError
from credentials.database import Row
from credentials.models import JsonDict
from credentials.store import SqlStore, oauth_session_aad

logger = logging.getLogger(__name__)

SESSION_TTL_MS: Final = 60 * 60 * 1000
STATE_BYTES: Final = 32

_COLUMNS: Final = (
    "id",
    "environment_id",
    "provider_config_key",
    "provider",
    "auth_mode",
    "connection_id",
    "connect_session_id",
    "callback_url",
    "connection_config",
    "secrets_enc",
    "ws_client_id",
    "created_at",
    "expires_at",
)


def new_state() -> str:
    """A fresh OAuth `state`: 256 random bits, 43 URL-safe characters."""
    return secrets.token_urlsafe(STATE_BYTES)


@dataclass(frozen=True, slots=True, repr=False)
class FlowSecrets:
    """What the callback needs that nobody else may read (sealed in the row).

    `end_user`, `tags` and `webhook_url_override` are not credentials, but personal
    data the connection inherits from the connect session; they travel sealed too.
    """

    code_verifier: str | None = None
    request_token: str | None = None
    request_token_secret: str | None = None
    client_id_override: str | None = None
    client_secret_override: str | None = None
    refresh_token_override: str | None = None
    end_user: JsonDict | None = None
    tags: dict[str, str] | None = None
    webhook_url_override: str | None = None

    def __repr__(self) -> str:
        # Which fields are set, never their values.
        present = [item.name for item in fields(self) if getattr(self, item.name) is not None]
        return f"FlowSecrets(set={present})"

    def to_json(self) -> JsonDict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, value: Any) -> FlowSecrets:
        known = {item.name for item in fields(cls)}
        given = value if isinstance(value, dict) else {}
        return cls(**{key: item for key, item in given.items() if key in known})


@dataclass(frozen=True, slots=True)
class FlowStart:
    """Everything a new authorisation records; the callback finishes from this alone."""

    environment_id: int
    provider_config_key: str
    provider: str
    auth_mode: str
    connection_id: str
    callback_url: str
    connection_config: JsonDict = field(default_factory=dict)
    connect_session_id: int | None = None
    ws_client_id: str | None = None
    secrets: FlowSecrets = FlowSecrets()


@dataclass(frozen=True, slots=True)
class OAuthSession:
    """A stored authorisation in progress; `id` is its state. Times are epoch ms."""

    id: str = field(repr=False)
    start: FlowStart
    created_at: int
    expires_at: int


class OAuthSessionStore:
    """OAuth sessions in the store's database; the store's clock decides expiry."""

    def __init__(self, store: SqlStore, *, ttl_ms: int = SESSION_TTL_MS) -> None:
        self._store = store
        self._ttl_ms = ttl_ms

    async def create(self, state: str, start: FlowStart) -> OAuthSession:
        """Record a new authorisation under `state` (see `new_state`)."""
        await self.purge_expired()
        now = self._store.clock()
        sealed = self._store.keyring.encrypt_json(
            start.secrets.to_json(), oauth_session_aad(start.environment_id, state)
        )
        await self._store.db.execute(
            f"INSERT INTO oauth_sessions ({', '.join(_COLUMNS)})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            state,
            start.environment_id,
            start.provider_config_key,
            start.provider,
            start.auth_mode,
            start.connection_id,
            start.connect_session_id,
            start.callback_url,
            orjson.dumps(start.connection_config).decode(),
            sealed,
            start.ws_client_id,
            now,
            now + self._ttl_ms,
        )
        return OAuthSession(state, start, now, now + self._ttl_ms)

    async def take(self, state: str) -> OAuthSession | None:
        """Redeem `state`: the live session it names, deleted in the same statement, or
        None when it is unknown, already redeemed or expired."""
        row = await self._store.db.fetchrow(
            f"DELETE FROM oauth_sessions WHERE id = $1 RETURNING {', '.join(_COLUMNS)}",
            state,
        )
        if row is None or int(row["expires_at"]) <= self._store.clock():
            return None
        try:
            return self._session(row)
        except DecryptionError as failure:
            # Sealed under a key no longer configured: the flow cannot finish.
            logger.warning("an OAuth session cannot be decrypted: %s", failure)
            return None

    async def purge_expired(self) -> int:
        return await self._store.db.execute(
            "DELETE FROM oauth_sessions WHERE expires_at <= $1", self._store.clock()
        )

    def _session(self, row: Row) -> OAuthSession:
        environment_id = int(row["environment_id"])
        state: str = row["id"]
        opened = self._store.keyring.decrypt_json(
            row["secrets_enc"], oauth_session_aad(environment_id, state)
        )
        start = FlowStart(
            environment_id=environment_id,
            provider_config_key=row["provider_config_key"],
            provider=row["provider"],
            auth_mode=row["auth_mode"],
            connection_id=row["connection_id"],
            callback_url=row["callback_url"],
            connection_config=orjson.loads(row["connection_config"]),
            connect_session_id=_int_or_none(row["connect_session_id"]),
            ws_client_id=row["ws_client_id"],
            secrets=FlowSecrets.from_json(opened),
        )
        return OAuthSession(state, start, int(row["created_at"]), int(row["expires_at"]))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
