"""Auth webhooks: tell a tenant's backend when a connection is created, fails to be
created, fails to refresh, or recovers (reference §10; see `events` for the rules).

`AuthWebhooks` decides and queues; it never sends. A webhook is written to the outbox in
the store (`outbox`), and a `WebhookSender` (`sender`), running in the management or
serve process, signs (`signing`) and delivers it with retries (`delivery`), so a restart
loses nothing. Any process that holds the store may queue: a proxy process that sees a
refresh fail queues its webhook, and whichever process runs a sender delivers it.

Queuing never fails the caller: an auth flow or a refresh has already done its work when
it reports, so a webhook that cannot be queued is logged (its kind, never its content)
and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from credentials.environment_settings import EnvironmentSettingsStore
from credentials.models import Connection, Environment
from credentials.outbound import OutboundBlocked, check_url
from credentials.store import SqlStore
from credentials.webhooks.delivery import origin
from credentials.webhooks.events import (
    REFRESH_ERROR_TYPE,
    AuthError,
    AuthEvent,
    auth_body,
    destinations,
    is_wanted,
)
from credentials.webhooks.outbox import WebhookOutbox
from credentials.webhooks.sender import SenderSettings, WebhookSender
from credentials.webhooks.signing import serialise, signing_secret

log = logging.getLogger("authgate.webhooks")

__all__ = ["AuthWebhooks", "SenderSettings", "WebhookOutbox", "WebhookSender"]


class AuthWebhooks:
    """Queues auth webhooks. Implements the management flows' `AuthEvents` protocol
    (`connection_created`, `connection_creation_failed`) and the refresher's listener
    (`refresh_failed`, `refresh_recovered`)."""

    def __init__(self, store: SqlStore, *, allow_private: bool) -> None:
        self._store = store
        self._allow_private = allow_private
        self._settings = EnvironmentSettingsStore(store)
        self.outbox = WebhookOutbox(store)

    def sender(self, settings: SenderSettings | None = None) -> WebhookSender:
        """A sender for this outbox (woken by what this process queues); the caller
        starts and closes it."""
        return WebhookSender(
            self._store, settings=settings, allow_private=self._allow_private, outbox=self.outbox
        )

    # --- auth flows ----------------------------------------------------------------------

    async def connection_created(
        self,
        environment: Environment,
        connection: Connection,
        auth_mode: str,
        *,
        operation: Literal["creation", "override"],
    ) -> None:
        event = _connection_event(environment.name, connection, auth_mode, operation)
        await self._queue(environment.id, event, connection.webhook_url_override)

    async def connection_creation_failed(
        self,
        environment: Environment,
        *,
        provider_config_key: str,
        connection_id: str | None,
        provider: str,
        auth_mode: str,
        error_type: str,
        error_description: str,
        end_user: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Always reported as `creation` (Nango's rule). A failed re-authorisation of an
        existing connection goes where that connection's webhooks go."""
        event = AuthEvent(
            environment=environment.name,
            provider_config_key=provider_config_key,
            connection_id=connection_id,
            provider=provider,
            auth_mode=auth_mode,
            operation="creation",
            error=AuthError(error_type, error_description),
            end_user=end_user,
            tags=tags,
        )
        try:
            override = await self._existing_override(
                environment.id, provider_config_key, connection_id
            )
        except Exception as failure:
            _not_queued(event, failure)
            return
        await self._queue(environment.id, event, override)

    # --- refresher -----------------------------------------------------------------------

    async def refresh_failed(
        self, connection: Connection, *, auth_mode: str, error_description: str
    ) -> None:
        error = AuthError(REFRESH_ERROR_TYPE, error_description)
        await self._queue_refresh(connection, auth_mode, error)

    async def refresh_recovered(self, connection: Connection, *, auth_mode: str) -> None:
        """authgate's addition: a connection whose refreshes were failing works again."""
        await self._queue_refresh(connection, auth_mode, None)

    async def _queue_refresh(
        self, connection: Connection, auth_mode: str, error: AuthError | None
    ) -> None:
        try:
            environment = await self._store.get_environment_by_id(connection.environment_id)
        except Exception as failure:
            log.warning("auth webhook not queued: %s", type(failure).__name__)
            return
        if environment is None:
            return  # deleted meanwhile: nobody left to tell
        event = _connection_event(environment.name, connection, auth_mode, "refresh", error)
        await self._queue(environment.id, event, connection.webhook_url_override)

    # --- queuing -------------------------------------------------------------------------

    async def _queue(self, environment_id: int, event: AuthEvent, override: str | None) -> None:
        try:
            settings = await self._settings.get(environment_id)
            if not is_wanted(settings, event.operation):
                return
            urls = self._permitted(destinations(settings, override))
            if not urls:
                return
            # Created with the first webhook so that every webhook is signed.
            await signing_secret(self._settings, environment_id)
            await self.outbox.enqueue(environment_id, urls, serialise(auth_body(event)))
        except Exception as failure:
            _not_queued(event, failure)

    def _permitted(self, urls: list[str]) -> list[str]:
        """The URLs the outbound policy lets through now (host names are checked again
        when they are resolved, at delivery)."""
        permitted = []
        for url in urls:
            try:
                check_url(url, allow_private=self._allow_private)
            except OutboundBlocked as blocked:
                log.warning(
                    "auth webhook destination refused by the outbound policy: %s",
                    blocked.reason,
                    extra={"destination": origin(url)},
                )
                continue
            permitted.append(url)
        return permitted

    async def _existing_override(
        self, environment_id: int, provider_config_key: str, connection_id: str | None
    ) -> str | None:
        if connection_id is None:
            return None
        # Without credentials: only the override is needed, and nothing is decrypted.
        existing = await self._store.list_connections(
            environment_id,
            provider_config_key=provider_config_key,
            connection_id=connection_id,
            limit=1,
            include_credentials=False,
        )
        return existing[0].webhook_url_override if existing else None


def _connection_event(
    environment: str,
    connection: Connection,
    auth_mode: str,
    operation: Literal["creation", "override", "refresh"],
    error: AuthError | None = None,
) -> AuthEvent:
    end_user: Mapping[str, Any] | None = connection.end_user
    return AuthEvent(
        environment=environment,
        provider_config_key=connection.provider_config_key,
        connection_id=connection.connection_id,
        provider=connection.provider,
        auth_mode=auth_mode,
        operation=operation,
        error=error,
        end_user=end_user,
        tags=connection.tags,
    )


def _not_queued(event: AuthEvent, failure: Exception) -> None:
    log.warning(
        "auth webhook not queued: %s",
        type(failure).__name__,
        extra={"operation": event.operation, "integration": event.provider_config_key},
    )
