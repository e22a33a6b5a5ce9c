"""Integrations and connections in Nango's public JSON shapes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from credentials.models import Connection, Integration, Provider


def iso_z(moment: datetime | None) -> str | None:
    """JavaScript's `toISOString()` rendering: milliseconds and a `Z`."""
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    # Not strftime: its %Y does not pad years before 1000 to four digits on every libc.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def integration_json(
    integration: Integration, provider: Provider | None, public_url: str
) -> dict[str, Any]:
    display_name = integration.display_name or (provider.display_name if provider else None)
    return {
        "unique_key": integration.unique_key,
        "provider": integration.provider,
        "display_name": display_name or integration.provider,
        "logo": f"{public_url}/images/template-logos/{integration.provider}.svg",
        "forward_webhooks": integration.forward_webhooks,
        "created_at": iso_z(integration.created_at),
        "updated_at": iso_z(integration.updated_at),
    }


def iso_offset(moment: datetime | None) -> str | None:
    """Milliseconds and `+00:00`, as `GET /connections/{id}` renders its timestamps."""
    rendered = iso_z(moment)
    return None if rendered is None else rendered[:-1] + "+00:00"


def iso_postgres(moment: datetime) -> str:
    """PostgreSQL's JSON rendering of a timestamptz (the list's `created`): microseconds
    with trailing zeros trimmed (no fraction at all when it is zero) and `+00:00`."""
    utc = moment.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}{'.' + fraction if fraction else ''}+00:00"
    )


def end_user_json(end_user: dict[str, Any] | None) -> dict[str, Any] | None:
    """The deprecated end user in its public shape: every field present, null if unset."""
    if not end_user:
        return None
    organization = end_user.get("organization")
    return {
        "id": end_user.get("id"),
        "display_name": end_user.get("display_name"),
        "email": end_user.get("email"),
        "tags": end_user.get("tags"),
        "organization": (
            {"id": organization.get("id"), "display_name": organization.get("display_name")}
            if isinstance(organization, dict)
            else None
        ),
    }


def connection_json(
    connection: Connection,
    *,
    credentials: dict[str, Any],
    connection_config: dict[str, Any] | None = None,
    render_time: Callable[[datetime | None], str | None] = iso_z,
) -> dict[str, Any]:
    """The full connection (§4.5). The caller chooses what credentials and config to show
    (stripped or not) and the timestamp style of the endpoint."""
    return {
        "id": connection.id,
        "connection_id": connection.connection_id,
        "provider_config_key": connection.provider_config_key,
        "provider": connection.provider,
        "errors": [],
        "end_user": end_user_json(connection.end_user),
        "tags": connection.tags,
        "metadata": connection.metadata,
        "connection_config": (
            connection.connection_config if connection_config is None else connection_config
        ),
        "webhook_url_override": connection.webhook_url_override,
        "created_at": render_time(connection.created_at),
        "updated_at": render_time(connection.updated_at),
        "last_fetched_at": render_time(connection.last_fetched_at),
        "credentials": credentials,
    }


def connection_list_item(connection: Connection) -> dict[str, Any]:
    """One entry of `GET /connections` (§4.4): no credentials, config or updated_at."""
    return {
        "id": connection.id,
        "connection_id": connection.connection_id,
        "provider_config_key": connection.provider_config_key,
        "provider": connection.provider,
        "created": iso_postgres(connection.created_at) if connection.created_at else None,
        "metadata": connection.metadata,
        "tags": connection.tags,
        "errors": [],
        "end_user": end_user_json(connection.end_user),
    }


def without_refresh_tokens(value: Any) -> Any:
    """A copy with every key that reduces to `refreshtoken` (letters only, lowercased:
    refresh_token, refreshToken, Refresh-Token) removed at any depth (§4.7)."""
    if isinstance(value, dict):
        return {
            key: without_refresh_tokens(item)
            for key, item in value.items()
            if not _is_refresh_token_key(key)
        }
    if isinstance(value, list):
        return [without_refresh_tokens(item) for item in value]
    return value


def _is_refresh_token_key(key: Any) -> bool:
    letters = "".join(char for char in str(key) if char.isascii() and char.isalpha())
    return letters.lower() == "refreshtoken"
