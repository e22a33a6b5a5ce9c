"""TWO_STEP: a provider-described token endpoint, driven by the stored credentials.

The entry names the request (`token_url`, `token_request_method`, `token_headers`,
`token_params`, `body_format`) and where the answer keeps the token
(`token_response: {token, token_expiration, token_expiration_strategy, refresh_token}`).
With a stored refresh token and a `refresh_url`, the refresh request
(`refresh_token_params`, `refresh_token_headers`) is sent instead.

Multi-request chains (`additional_steps`) and signed assertions (`assertion`,
`signature`) are not supported; a provider that needs them is refused as misconfigured,
by field name, rather than sent a request that cannot work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from credentials.expiry import iso_expiry, jwt_expiry, moment_to_epoch
from credentials.grants.base import Grant, GrantRequest, misconfigured
from credentials.grants.calls import (
    body_format,
    build_call,
    complete_headers,
    complete_params,
    endpoint_url,
)
from credentials.grants.http import TokenCall, TokenReply
from credentials.grants.responses import at_path, decoded_or_error, missing_token, text_at
from credentials.models import Connection, Integration, JsonDict, Provider
from credentials.templates import template_values

CREDENTIAL_TYPE: Final = "TWO_STEP"
UNSUPPORTED_FIELDS: Final = ("additional_steps", "assertion", "signature")
DEFAULT_TOKEN_PATHS: Final = ("token", "access_token")
_JSON_OR_FORM: Final = frozenset({"form", "json"})


async def fetch(request: GrantRequest) -> Grant:
    connection = request.connection
    call = token_call(connection, request.integration, request.provider)
    reply = await request.http.send(call)
    return obtained(
        reply, connection, request.provider, now=request.now, secrets=stored_secrets(connection)
    )


# --- pure ---------------------------------------------------------------------------


def token_call(connection: Connection, integration: Integration, provider: Provider) -> TokenCall:
    definition = provider.definition
    for name in UNSUPPORTED_FIELDS:
        if definition.get(name):
            raise misconfigured(f"TWO_STEP {name} is not supported")
    refreshing = uses_refresh(connection, definition)
    params_key = "refresh_token_params" if refreshing else "token_params"
    headers_key = "refresh_token_headers" if refreshing else "token_headers"
    if headers_key not in definition:
        headers_key = "token_headers"
    values = template_values(connection, integration)
    headers = complete_headers(definition.get(headers_key), values, what=headers_key)
    if not any(name.lower() == "accept" for name in headers):
        headers["Accept"] = "application/json"
    url = endpoint_url(
        provider,
        CREDENTIAL_TYPE,
        connection,
        with_credentials=True,
        template=str(definition["refresh_url"]) if refreshing else None,
    )
    return build_call(
        url,
        complete_params(definition.get(params_key), values, what=params_key),
        method=str(definition.get("token_request_method") or "POST"),
        encoding=body_format(definition, allowed=_JSON_OR_FORM),
        headers=headers,
    )


def uses_refresh(connection: Connection, definition: Mapping[str, Any]) -> bool:
    refresh_url = definition.get("refresh_url")
    stored = connection.credentials.get("refresh_token")
    return (
        isinstance(refresh_url, str)
        and bool(refresh_url)
        and isinstance(stored, str)
        and bool(stored)
    )


def stored_secrets(connection: Connection) -> list[str]:
    """Every stored string value: TWO_STEP credentials are free-form and all secret."""
    return [value for value in connection.credentials.values() if isinstance(value, str)]


def obtained(
    reply: TokenReply,
    connection: Connection,
    provider: Provider,
    *,
    now: float,
    secrets: Iterable[str] = (),
) -> Grant:
    body = decoded_or_error(reply, now=now, secrets=secrets)
    spec = provider.definition.get("token_response")
    spec = spec if isinstance(spec, Mapping) else {}
    token_path = spec.get("token")
    paths = (str(token_path),) if token_path else DEFAULT_TOKEN_PATHS
    token = next((found for path in paths if (found := text_at(body, path))), None)
    if token is None:
        raise missing_token(reply, "token")
    credentials: JsonDict = {**connection.credentials, "type": CREDENTIAL_TYPE, "token": token}
    refresh_path = spec.get("refresh_token")
    new_refresh = text_at(body, str(refresh_path)) if refresh_path else None
    if new_refresh is not None:
        credentials["refresh_token"] = new_refresh
    credentials.pop("expires_at", None)  # a stale expiry must not outlive its token
    expires_at = expiry(body, spec, provider.definition, token, now)
    if expires_at is not None:
        credentials["expires_at"] = iso_expiry(expires_at)
    credentials["raw"] = body
    return Grant(credentials)


def expiry(
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    definition: Mapping[str, Any],
    token: str,
    now: float,
) -> float | None:
    """From the answer's expiration field (per strategy), else the fixed
    `token_expires_in_ms` (0: never), else the token's own JWT `exp`."""
    path = spec.get("token_expiration")
    value = at_path(body, str(path)) if path else None
    found = _expiration(value, spec.get("token_expiration_strategy"), now)
    if found is not None:
        return found
    if "token_expires_in_ms" in definition:
        milliseconds = _number(definition["token_expires_in_ms"])
        return now + milliseconds / 1000 if milliseconds else None
    return jwt_expiry(token)


def _expiration(value: object, strategy: object, now: float) -> float | None:
    """An `expireAt` moment, or an `expireIn` lifetime in seconds (the default for a
    number; a string that is not a number is read as a moment)."""
    if value is None or isinstance(value, bool):
        return None
    seconds = None if strategy == "expireAt" else _number(value)
    if seconds is not None:
        return now + seconds
    return moment_to_epoch(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
