"""Per-environment settings of the auth flows and webhooks.

Where OAuth providers send users back (`callback_url`), where auth webhooks go and which
are sent, the secret that signs them, and the legacy public-key mode with its optional
HMAC. An environment without a row has the defaults. The two secrets are keyring
ciphertexts bound to their environment and field, like every other stored secret.
"""

# S608: the only SQL assembled here joins constant column names; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields, replace
from typing import Any

from credentials.database import Row
from credentials.store import SqlStore, environment_settings_aad

_PLAIN = (
    "callback_url",
    "webhook_url",
    "webhook_secondary_url",
    "send_auth_creation",
    "send_auth_refresh_error",
    "public_key",
    "hmac_enabled",
)
_SEALED = ("webhook_secret", "hmac_key")
_COLUMNS = (*_PLAIN, *(f"{name}_enc" for name in _SEALED))


@dataclass(frozen=True, slots=True)
class EnvironmentSettings:
    environment_id: int
    callback_url: str | None = None
    """Where providers redirect after consent; None: `<public URL>/oauth/callback`."""
    webhook_url: str | None = None
    webhook_secondary_url: str | None = None
    send_auth_creation: bool = True
    """Send `creation` auth webhooks (`override` ones are sent whenever a URL is set)."""
    send_auth_refresh_error: bool = True
    webhook_secret: str | None = None
    """Signs webhook bodies (`X-Nango-Hmac-Sha256`); generated when webhooks are first
    configured."""
    public_key: str | None = None
    """Legacy public-key authentication of the auth routes; None: off."""
    hmac_enabled: bool = False
    hmac_key: str | None = None

    def __repr__(self) -> str:
        # The secrets never reach a log line or a traceback.
        shown = {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name not in _SEALED
        }
        return f"EnvironmentSettings({shown})"


def generate_secret() -> str:
    """A signing secret or HMAC key: 32 random bytes as hex."""
    return secrets.token_hex(32)


class EnvironmentSettingsStore:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def get(self, environment_id: int) -> EnvironmentSettings:
        row = await self._store.db.fetchrow(
            f"SELECT environment_id, {', '.join(_COLUMNS)} FROM environment_settings"
            " WHERE environment_id = $1",
            environment_id,
        )
        return self._open(row) if row is not None else EnvironmentSettings(environment_id)

    async def find_by_public_key(self, public_key: str) -> EnvironmentSettings | None:
        row = await self._store.db.fetchrow(
            f"SELECT environment_id, {', '.join(_COLUMNS)} FROM environment_settings"
            " WHERE public_key = $1",
            public_key,
        )
        return self._open(row) if row is not None else None

    async def update(self, environment_id: int, **changes: Any) -> EnvironmentSettings:
        """Sets the named fields (others keep their values) and returns the result."""
        current = await self.get(environment_id)
        updated = replace(current, **changes)
        values = [getattr(updated, name) for name in _PLAIN]
        values += [self._seal(environment_id, name, getattr(updated, name)) for name in _SEALED]
        placeholders = ", ".join(f"${index}" for index in range(2, len(_COLUMNS) + 3))
        assignments = ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS)
        await self._store.db.execute(
            f"INSERT INTO environment_settings (environment_id, {', '.join(_COLUMNS)},"
            f" updated_at) VALUES ($1, {placeholders})"
            f" ON CONFLICT (environment_id) DO UPDATE SET {assignments},"
            " updated_at = excluded.updated_at",
            environment_id,
            *values,
            self._store.clock(),
        )
        return updated

    def _open(self, row: Row) -> EnvironmentSettings:
        environment_id = int(row["environment_id"])
        plain: dict[str, Any] = {name: row[name] for name in _PLAIN}
        for flag in ("send_auth_creation", "send_auth_refresh_error", "hmac_enabled"):
            plain[flag] = bool(plain[flag])
        sealed: dict[str, Any] = {
            name: self._unseal(environment_id, name, row[f"{name}_enc"]) for name in _SEALED
        }
        return EnvironmentSettings(environment_id, **plain, **sealed)

    def _seal(self, environment_id: int, name: str, value: str | None) -> str | None:
        if value is None:
            return None
        return self._store.keyring.encrypt(
            value.encode(), environment_settings_aad(environment_id, name)
        )

    def _unseal(self, environment_id: int, name: str, token: str | None) -> str | None:
        if token is None:
            return None
        return self._store.keyring.decrypt(
            token, environment_settings_aad(environment_id, name)
        ).decode()
