"""Value objects shared by the proxy and the management service.

Credentials travel as plain JSON-shaped dicts in Nango's wire shape (`{"type": "OAUTH2",
"access_token": ...}`), because that is what the management API accepts and returns; the
injectors read the few fields they need from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JsonDict = dict[str, Any]


class AuthMode(StrEnum):
    """Every auth mode Nango's catalogue declares (plus legacy values it still accepts)."""

    OAUTH1 = "OAUTH1"
    OAUTH2 = "OAUTH2"
    OAUTH2_CC = "OAUTH2_CC"
    BASIC = "BASIC"
    API_KEY = "API_KEY"
    APP = "APP"
    CUSTOM = "CUSTOM"
    NONE = "NONE"
    TBA = "TBA"
    JWT = "JWT"
    BILL = "BILL"
    TWO_STEP = "TWO_STEP"
    SIGNATURE = "SIGNATURE"
    MCP_OAUTH2 = "MCP_OAUTH2"
    MCP_OAUTH2_GENERIC = "MCP_OAUTH2_GENERIC"
    INSTALL_PLUGIN = "INSTALL_PLUGIN"
    AWS_SIGV4 = "AWS_SIGV4"
    APP_STORE = "APP_STORE"
    TABLEAU = "TABLEAU"


@dataclass(frozen=True, slots=True)
class Environment:
    """An isolated tenant: its own secret keys, integrations and connections."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Integration:
    """One environment's configuration of a provider (`unique_key` = providerConfigKey).

    `credentials` holds the decrypted OAuth client (client_id, client_secret, scopes, ...)
    or None when the integration has none.
    """

    id: int
    environment_id: int
    unique_key: str
    provider: str
    display_name: str | None
    forward_webhooks: bool
    credentials: JsonDict | None
    custom: dict[str, str] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RefreshState:
    """Where a connection stands in the refresh lifecycle.

    Healthy is all defaults. `failures` counts consecutive failed refreshes and `error`
    names the last one's reason (`invalid_grant`, `provider_5xx`, `network`, ...);
    `retry_at` (epoch ms) is when an unforced refresh may be tried again; `needs_reauth`
    means the provider refused for good and only a new authorisation can help.
    """

    failures: int = 0
    error: str | None = None
    retry_at: int | None = None
    needs_reauth: bool = False
    last_refresh_at: int | None = None


@dataclass(frozen=True, slots=True)
class Connection:
    """One end user's credentials for one integration, decrypted.

    `version` increases on every credential write; refresh uses it for compare-and-set.
    `webhook_url_override` is where this connection's webhooks go instead of the
    environment's URL (None: the environment's).
    """

    id: int
    environment_id: int
    integration_id: int
    provider_config_key: str
    provider: str
    connection_id: str
    credentials: JsonDict
    connection_config: JsonDict = field(default_factory=dict)
    metadata: JsonDict | None = None
    tags: dict[str, str] = field(default_factory=dict)
    end_user: JsonDict | None = None
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_fetched_at: datetime | None = None
    webhook_url_override: str | None = None
    refresh: RefreshState = RefreshState()


@dataclass(frozen=True, slots=True)
class RetryRules:
    """A provider's `proxy.retry` block from the catalogue.

    `error_codes` holds rules such as "403", "5xx" or "500-502"; when present they replace
    the default retryable statuses.
    """

    error_codes: tuple[str, ...] = ()
    at_headers: tuple[str, ...] = ()
    after_headers: tuple[str, ...] = ()
    remaining_header: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderProxy:
    """A provider's `proxy` block: where calls go and what every call carries."""

    base_url: str | None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    retry: RetryRules = RetryRules()
    decompress: bool = False
    forward_headers_on_redirect: bool = False


@dataclass(frozen=True, slots=True)
class Provider:
    """One resolved catalogue entry (aliases already merged).

    `definition` is the resolved entry as the catalogue file spells it, served as-is by
    `GET /providers`.
    """

    name: str
    auth_mode: str
    display_name: str
    proxy: ProviderProxy | None
    definition: JsonDict
