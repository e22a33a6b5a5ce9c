"""OAUTH2: the refresh_token grant (RFC 6749 §6) against the provider's token URL.

`grant_type=refresh_token` is always sent, whatever `refresh_params`/`token_params` say:
Nango lets a `grant_type` in those maps win, so a provider whose `token_params` carry
`grant_type: authorization_code` sends a refresh the endpoint must refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from credentials.expiry import expiry_from_response, iso_expiry
from credentials.grants.base import Grant, GrantError, GrantRequest, misconfigured
from credentials.grants.calls import (
    ClientCredentials,
    body_format,
    client_authenticated_call,
    client_from,
    complete_params,
    endpoint_url,
)
from credentials.grants.http import TokenCall, TokenReply
from credentials.grants.responses import at_path, decoded_or_error, missing_token, text_at
from credentials.models import Connection, Integration, JsonDict, Provider
from credentials.templates import template_values

CREDENTIAL_TYPE: Final = "OAUTH2"
_JSON_OR_FORM: Final = frozenset({"form", "json"})
# Fields of an alternate-path object that describe the token (Slack's `authed_user`).
_TOKEN_FIELDS: Final = ("access_token", "refresh_token", "expires_in", "expires_at")


async def refresh(request: GrantRequest) -> Grant:
    connection = request.connection
    call = refresh_call(connection, request.integration, request.provider)
    reply = await request.http.send(call)
    secrets = request_secrets(connection, request.integration)
    return refreshed(reply, connection, request.provider, now=request.now, secrets=secrets)


# --- pure ---------------------------------------------------------------------------


def stored_refresh_token(connection: Connection) -> str:
    token = connection.credentials.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise GrantError("no_refresh_token", "the connection has no refresh_token")
    return token


def client_for(connection: Connection, integration: Integration) -> ClientCredentials:
    """The connection's `config_override` client if it names one, else the integration's."""
    override = connection.credentials.get("config_override")
    client = client_from(
        override if isinstance(override, Mapping) else None, integration.credentials
    )
    if client is None:
        raise misconfigured("the integration has no client_id")
    return client


def refresh_call(connection: Connection, integration: Integration, provider: Provider) -> TokenCall:
    definition = provider.definition
    refresh_token = stored_refresh_token(connection)
    client = client_for(connection, integration)
    values = template_values(connection, integration)
    params = refresh_params(definition, values)
    params["grant_type"] = "refresh_token"
    params["refresh_token"] = refresh_token
    return client_authenticated_call(
        endpoint_url(provider, CREDENTIAL_TYPE, connection),
        params,
        definition,
        client,
        encoding=body_format(definition, allowed=_JSON_OR_FORM),
    )


def refresh_params(definition: Mapping[str, Any], values: Mapping[str, Any]) -> JsonDict:
    """`refresh_params`, else `token_params` without its (code-exchange) grant_type."""
    if "refresh_params" in definition:
        return complete_params(definition["refresh_params"], values, what="refresh_params")
    params = complete_params(definition.get("token_params"), values, what="token_params")
    params.pop("grant_type", None)
    return params


def request_secrets(connection: Connection, integration: Integration) -> list[str]:
    """What the request carried that a provider might echo back in an error."""
    client = client_for(connection, integration)
    found = [client.secret or ""]
    for key in ("refresh_token", "access_token"):
        value = connection.credentials.get(key)
        if isinstance(value, str):
            found.append(value)
    return found


def refreshed(
    reply: TokenReply,
    connection: Connection,
    provider: Provider,
    *,
    now: float,
    secrets: Iterable[str] = (),
) -> Grant:
    body = decoded_or_error(reply, now=now, secrets=secrets)
    source = token_source(body, provider.definition.get("alternate_access_token_response_path"))
    access_token = text_at(source, "access_token")
    if access_token is None:
        raise missing_token(reply, "access_token")
    credentials: JsonDict = {
        "type": CREDENTIAL_TYPE,
        "access_token": access_token,
        # Rotation: a new refresh token replaces the old; none in the answer keeps it.
        "refresh_token": text_at(source, "refresh_token") or stored_refresh_token(connection),
    }
    expires_at = expiry_from_response(source, now, token=access_token)
    if expires_at is not None:
        credentials["expires_at"] = iso_expiry(expires_at)
    credentials["raw"] = body
    override = connection.credentials.get("config_override")
    if override:
        credentials["config_override"] = override
    config = updated_config(connection.connection_config, metadata(body, provider.definition))
    return Grant(credentials, config)


def token_source(body: JsonDict, alternate_path: object) -> Mapping[str, Any]:
    """Where the token fields are: the top level, else the alternate path.

    A string at the alternate path is the access token itself (the other fields stay at
    the top level); an object there supplies the token fields.
    """
    if text_at(body, "access_token") is not None or not isinstance(alternate_path, str):
        return body
    found = at_path(body, alternate_path)
    if isinstance(found, str) and found:
        return {**body, "access_token": found}
    if isinstance(found, Mapping):
        return {key: found[key] for key in _TOKEN_FIELDS if key in found}
    return body


def metadata(body: Mapping[str, Any], definition: Mapping[str, Any]) -> JsonDict:
    """`token_response_metadata` paths copied from the answer (string/bool values only),
    stored under the path as written (`team.id`), as Nango does."""
    paths = definition.get("token_response_metadata") or ()
    copied: JsonDict = {}
    for path in paths if isinstance(paths, list) else ():
        value = at_path(body, str(path))
        if isinstance(value, str | bool):
            copied[str(path)] = value
    return copied


def updated_config(config: Mapping[str, Any], changes: Mapping[str, Any]) -> JsonDict | None:
    """The whole new connection_config, or None when `changes` change nothing."""
    if all(config.get(key) == value and key in config for key, value in changes.items()):
        return None
    return {**config, **changes}
