"""What an auth webhook says, and whether and where it is sent (reference §10).

Body (Nango's `type: auth` webhook)::

    {"from": "nango", "type": "auth", "connectionId", "providerConfigKey", "authMode",
     "provider", "environment", "operation": "creation" | "override" | "refresh",
     "success": true | false, "error": {"type", "description"} (failures only),
     "endUser": {"endUserId", "endUserEmail"?, "organizationId"?, "tags"?} (when known),
     "tags": {...} (when the connection has any)}

Gating, by the environment's settings:

* `creation` (success or failure) only if `send_auth_creation`;
* `refresh` only if `send_auth_refresh_error`;
* `override` whenever there is somewhere to send it.

Destinations: the environment's `webhook_url` and `webhook_secondary_url`; a connection's
`webhook_url_override` replaces the primary URL and suppresses the secondary one. The same
URL configured twice receives the webhook once.

authgate's addition: **recovery**. When a connection whose refreshes were failing
refreshes successfully again, a `refresh` webhook with `success: true` is sent, gated like
refresh failures, so a receiver that marked the connection broken can mark it healthy
again. (Nango sends nothing for a successful refresh.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from credentials.environment_settings import EnvironmentSettings

Operation = Literal["creation", "override", "refresh"]

REFRESH_ERROR_TYPE = "refresh_token_external_error"
"""Nango's error type for a refresh the provider did not grant."""


@dataclass(frozen=True, slots=True)
class AuthError:
    type: str
    description: str


@dataclass(frozen=True, slots=True)
class AuthEvent:
    """One auth outcome to report. `end_user` is in the stored connection shape:
    `{id, email?, display_name?, tags?, organization?: {id, display_name?}}`."""

    environment: str
    provider_config_key: str
    connection_id: str | None
    provider: str
    auth_mode: str
    operation: Operation
    error: AuthError | None = None
    end_user: Mapping[str, Any] | None = field(default=None, repr=False)
    tags: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        return self.error is None


def auth_body(event: AuthEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "nango",
        "type": "auth",
        "providerConfigKey": event.provider_config_key,
        "authMode": event.auth_mode,
        "provider": event.provider,
        "environment": event.environment,
        "operation": event.operation,
        "success": event.success,
    }
    if event.connection_id is not None:
        body["connectionId"] = event.connection_id
    if event.error is not None:
        body["error"] = {"type": event.error.type, "description": event.error.description}
    end_user = end_user_body(event.end_user)
    if end_user is not None:
        body["endUser"] = end_user
    if event.tags:
        body["tags"] = dict(event.tags)
    return body


def end_user_body(end_user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stored end user in the webhook's shape; None when there is no identified user."""
    if not end_user or not end_user.get("id"):
        return None
    body: dict[str, Any] = {"endUserId": end_user["id"]}
    if end_user.get("email"):
        body["endUserEmail"] = end_user["email"]
    organization = end_user.get("organization")
    if isinstance(organization, Mapping) and organization.get("id"):
        body["organizationId"] = organization["id"]
    if end_user.get("tags"):
        body["tags"] = end_user["tags"]
    return body


def is_wanted(settings: EnvironmentSettings, operation: Operation) -> bool:
    """Whether the environment asked for webhooks of this operation."""
    if operation == "creation":
        return settings.send_auth_creation
    if operation == "refresh":
        return settings.send_auth_refresh_error
    return True


def destinations(settings: EnvironmentSettings, webhook_url_override: str | None) -> list[str]:
    """Where the webhook goes, primary first, each URL once."""
    if webhook_url_override:
        return [webhook_url_override]
    configured = (settings.webhook_url, settings.webhook_secondary_url)
    return list(dict.fromkeys(url for url in configured if url))
