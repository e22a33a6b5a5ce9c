"""When credentials expire: read from what is stored, inferred from what a provider sent.

Pure functions over epoch seconds. Stored credentials carry `expires_at` as an ISO-8601
string (Nango's wire shape); older imports may hold a number (seconds or milliseconds).
A token response is read in order of trust: `expires_in`, then an absolute `expires_at`,
then the `exp` claim of a JWT access token; with none of them the token is treated as
non-expiring, and only a provider 401 will refresh it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

# Numbers above this are epoch milliseconds, below it epoch seconds (year 5138 in seconds).
_MILLISECONDS_THRESHOLD = 100_000_000_000


def stored_expiry(credentials: Mapping[str, Any]) -> float | None:
    """Epoch seconds of the stored `expires_at`, or None when there is none (or unreadable)."""
    return moment_to_epoch(credentials.get("expires_at"))


def moment_to_epoch(value: Any) -> float | None:
    """An ISO-8601 string or an epoch number (seconds or milliseconds) as epoch seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value / 1000 if value > _MILLISECONDS_THRESHOLD else float(value)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


def iso_expiry(epoch: float) -> str:
    """The stored spelling: UTC, millisecond precision, `Z` suffix (as Nango returns it)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expiry_from_response(
    response: Mapping[str, Any],
    now: float,
    *,
    token: str | None = None,
    expires_in_milliseconds: bool = False,
) -> float | None:
    """Epoch seconds when a freshly issued token expires, or None if nothing tells.

    `token` is the access token itself, consulted for a JWT `exp` claim last.
    """
    lifetime = _number(response.get("expires_in"))
    if lifetime is not None and lifetime > 0:
        return now + (lifetime / 1000 if expires_in_milliseconds else lifetime)
    absolute = moment_to_epoch(response.get("expires_at"))
    if absolute is not None:
        return absolute
    return jwt_expiry(token) if token else None


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (it is not ours to verify)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = orjson.loads(payload)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    return _number(claims.get("exp"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
