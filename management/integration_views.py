"""What the integration endpoints show beyond the common fields (reference §4.2, §6.2).

`integration_json` (management/formatters.py) renders the fields every integration has;
this module adds the provider-dependent ones: the Connect UI's key label and the names of
preconfigured fields, and, on request, the webhook URL and the OAuth/App client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from credentials.models import AuthMode, Environment, Integration, Provider
from management.formatters import integration_json

_CLIENT_FIELDS: dict[str, tuple[str, ...]] = {
    AuthMode.OAUTH1: ("client_id", "client_secret", "scopes", "webhook_secret"),
    AuthMode.OAUTH2: ("client_id", "client_secret", "scopes", "webhook_secret"),
    AuthMode.TBA: ("client_id", "client_secret", "scopes", "webhook_secret"),
    AuthMode.APP: ("app_id", "private_key", "app_link"),
    AuthMode.CUSTOM: ("client_id", "client_secret", "app_id", "app_link", "private_key"),
}


def config_schema(provider: Provider | None) -> dict[str, Any] | None:
    """The provider's `integration_config` form schema, when it declares one."""
    if provider is None:
        return None
    schema = provider.definition.get("integration_config")
    return schema if isinstance(schema, dict) and schema else None


def public_integration(
    integration: Integration, provider: Provider | None, public_url: str
) -> dict[str, Any]:
    data = integration_json(integration, provider, public_url)
    schema = config_schema(provider)
    if schema is None or provider is None:
        return data
    custom = integration.custom or {}
    label = custom.get("keyLabel")
    if label:
        data["credentials_label"] = {"apiKey": label}
    if provider.auth_mode == AuthMode.TWO_STEP:
        data["preconfigured_credentials"] = [name for name in schema if custom.get(name)]
    return data


def client_credentials(
    integration: Integration, provider: Provider | None
) -> dict[str, Any] | None:
    """The integration's developer app in the shape of the provider's auth mode; None for
    modes without one. Unset fields are null rather than absent."""
    if provider is None or provider.auth_mode not in _CLIENT_FIELDS:
        return None
    stored = integration.credentials or {}
    shown: dict[str, Any] = {"type": provider.auth_mode}
    for name in _CLIENT_FIELDS[provider.auth_mode]:
        value = stored.get(name)
        shown[name] = value if isinstance(value, str) else None
    return shown


def webhook_url(
    integration: Integration, provider: Provider | None, environment: Environment, public_url: str
) -> str | None:
    """Where the provider should send webhooks; only providers that route webhooks have one.

    Nango puts its environment UUID in the path; authgate environments are named, and the
    name is as stable an identifier (environments are never renamed).
    """
    if provider is None or not provider.definition.get("webhook_routing_script"):
        return None
    # quote(safe="") escapes what encodeURIComponent escapes for the characters keys allow.
    return (
        f"{public_url}/webhook/{quote(environment.name, safe='')}/"
        f"{quote(integration.unique_key, safe='')}"
    )
