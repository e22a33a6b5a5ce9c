"""OAUTH2_CC: the client credentials grant (RFC 6749 §4.4), run again for a new token.

The client is the one stored on the connection (the end user typed it), else the
integration's. `token_params.grant_type` may name a provider's variant (Zoom's
`account_credentials`). The client authenticates as `token_request_auth_method` says:
in the body (default), with a Basic header (`basic`), as `username`/`password` fields
(`custom`), or with a JWT signed by its `client_private_key` (`private_key_jwt`,
credentials/grants/client_assertion.py). mTLS is not supported yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from credentials.expiry import expiry_from_response, iso_expiry
from credentials.grants.base import Grant, GrantRequest, misconfigured
from credentials.grants.calls import (
    ClientCredentials,
    body_format,
    build_call,
    client_authenticated_call,
    client_from,
    complete_params,
    endpoint_url,
)
from credentials.grants.client_assertion import assertion_fields
from credentials.grants.http import TokenCall, TokenReply
from credentials.grants.responses import decoded_or_error, missing_token, text_at
from credentials.models import Connection, Integration, JsonDict, Provider
from credentials.templates import template_values

CREDENTIAL_TYPE: Final = "OAUTH2_CC"
DEFAULT_LIFETIME_SECONDS: Final = 55 * 60  # Nango's default when the answer gives none
TOKEN_PATHS: Final = ("access_token", "data.token", "jwt")
# Stored alongside the token so the next grant can run again (mTLS material included).
_KEPT_FIELDS: Final = ("client_certificate", "client_private_key")
_ACCEPT_JSON: Final = {"Accept": "application/json"}
_AUTH_METHODS: Final = frozenset({None, "body", "basic", "custom", "private_key_jwt"})


async def fetch(request: GrantRequest) -> Grant:
    connection, integration = request.connection, request.integration
    client = client_for(connection, integration)
    call = client_credentials_call(
        connection, integration, request.provider, client, now=request.now
    )
    reply = await request.http.send(call)
    return issued(
        reply, connection, request.provider, now=request.now, secrets=[client.secret or ""]
    )


# --- pure ---------------------------------------------------------------------------


def client_for(connection: Connection, integration: Integration) -> ClientCredentials:
    client = client_from(connection.credentials, integration.credentials)
    if client is None:
        raise misconfigured("neither the connection nor the integration has a client_id")
    return client


def client_credentials_call(
    connection: Connection,
    integration: Integration,
    provider: Provider,
    client: ClientCredentials,
    *,
    now: float,
) -> TokenCall:
    definition = provider.definition
    method = definition.get("token_request_auth_method")
    if method not in _AUTH_METHODS:
        raise misconfigured(f"token_request_auth_method {method!r} is not supported")
    if definition.get("require_client_certificate"):
        raise misconfigured("require_client_certificate (mTLS) is not supported")
    values = template_values(connection, integration)
    params = complete_params(definition.get("token_params"), values, what="token_params")
    params.setdefault("grant_type", "client_credentials")
    scope = scope_text(connection, integration, definition)
    if scope:
        params["scope"] = scope
    params.update(authorization_params(connection))
    url = endpoint_url(provider, CREDENTIAL_TYPE, connection)
    encoding = body_format(definition)
    if method == "private_key_jwt":
        key = _private_key(connection)
        params.update(assertion_fields(client.client_id, key, url, now=now))
        return build_call(url, params, encoding=encoding, headers=_ACCEPT_JSON)
    if method == "custom":
        # Providers that call their client a user (Nango's `custom` method).
        params.update(username=client.client_id, password=client.secret or "")
        return build_call(url, params, encoding=encoding, headers=_ACCEPT_JSON)
    return client_authenticated_call(url, params, definition, client, encoding=encoding)


def _private_key(connection: Connection) -> str:
    key = (connection.credentials or {}).get("client_private_key")
    if not isinstance(key, str) or not key.strip():
        raise misconfigured("private_key_jwt needs the connection's client_private_key")
    return key


def authorization_params(connection: Connection) -> JsonDict:
    """`connection_config.authorization_params` (a connect session's defaults, kept at
    creation): fields of the token request that win over the provider's."""
    given = (connection.connection_config or {}).get("authorization_params")
    if not isinstance(given, Mapping):
        return {}
    return {str(key): value for key, value in given.items() if isinstance(value, str)}


def scope_text(
    connection: Connection, integration: Integration, definition: Mapping[str, Any]
) -> str:
    """The connection's `oauth_scopes`, else the integration's scopes, joined with the
    provider's `scope_separator` (default a space)."""
    scopes = scope_list((connection.connection_config or {}).get("oauth_scopes"))
    if not scopes:
        scopes = scope_list((integration.credentials or {}).get("scopes"))
    separator = definition.get("scope_separator")
    return (separator if isinstance(separator, str) else " ").join(scopes)


def scope_list(value: object) -> list[str]:
    """Scopes from a comma-separated string or a list of strings."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def issued(
    reply: TokenReply,
    connection: Connection,
    provider: Provider,
    *,
    now: float,
    secrets: Iterable[str] = (),
) -> Grant:
    body = decoded_or_error(reply, now=now, secrets=secrets)
    token = next((found for path in TOKEN_PATHS if (found := text_at(body, path))), None)
    if token is None:
        raise missing_token(reply, "access_token")
    milliseconds = provider.definition.get("expires_in_unit") == "milliseconds"
    expires_at = expiry_from_response(body, now, expires_in_milliseconds=milliseconds)
    credentials: JsonDict = {
        "type": CREDENTIAL_TYPE,
        "token": token,
        "expires_at": iso_expiry(expires_at or now + DEFAULT_LIFETIME_SECONDS),
    }
    # The stored client is written back as it was; a client that came from the
    # integration stays there, so rotating the integration's secret reaches every
    # connection.
    stored = connection.credentials
    for key in ("client_id", "client_secret", *_KEPT_FIELDS):
        if stored.get(key):
            credentials[key] = stored[key]
    credentials["raw"] = body
    return Grant(credentials)
