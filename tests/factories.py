"""Value objects for tests that need a connection or an integration without a store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from credentials.models import Connection, Integration

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def make_connection(
    credentials: dict[str, Any],
    *,
    provider: str = "github",
    provider_config_key: str = "my-key",
    **extra: Any,
) -> Connection:
    return Connection(
        id=1,
        environment_id=1,
        integration_id=1,
        provider_config_key=provider_config_key,
        provider=provider,
        connection_id="conn-1",
        credentials=credentials,
        **extra,
    )


def make_integration(
    credentials: dict[str, Any] | None = None,
    *,
    provider: str = "github",
    unique_key: str = "my-key",
) -> Integration:
    return Integration(
        id=1,
        environment_id=1,
        unique_key=unique_key,
        provider=provider,
        display_name=None,
        forward_webhooks=False,
        credentials=credentials,
        custom=None,
        created_at=EPOCH,
        updated_at=EPOCH,
    )
