"""Integrations and connections in Nango's public JSON shapes."""

from __future__ import annotations

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


def connection_json(connection: Connection, *, credentials: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": connection.id,
        "connection_id": connection.connection_id,
        "provider_config_key": connection.provider_config_key,
        "provider": connection.provider,
        "errors": [],
        "end_user": connection.end_user,
        "tags": connection.tags,
        "metadata": connection.metadata,
        "connection_config": connection.connection_config,
        # Not stored yet (the store has no column for it), so never set.
        "webhook_url_override": None,
        "created_at": iso_z(connection.created_at),
        "updated_at": iso_z(connection.updated_at),
        "last_fetched_at": iso_z(connection.last_fetched_at),
        "credentials": credentials,
    }
