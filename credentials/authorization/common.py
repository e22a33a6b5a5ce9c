"""What the OAuth 2.0 and OAuth 1.0a flows share: their error, the connection being
made, and the catalogue's URL and parameter templates completed from its config.

A template the end user's `params[...]` do not complete is the user's problem
(`url_param_err`, naming the missing keys, never a value); the same template failing
later, at the callback, is reported by the grants' own `misconfigured` error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

from credentials.grants.calls import missing_names, url_values
from credentials.models import Connection, Integration, JsonDict
from credentials.outbound import OutboundBlocked, check_url
from credentials.templates import interpolate_complete, template_values

# Node's querystring escapes everything but these (and letters, digits, `-_.~`); the
# authorize URL is spelled the way Nango's client spells it.
_QUERY_SAFE: Final = "!*'()"


class AuthorizationError(Exception):
    """An authorisation cannot go on. `error_type` is the type the frontend SDK and the
    callback page report (`url_param_err`, `callback_err`, `token_err`, ...); the
    message is for a human and never holds a secret."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def draft_connection(
    integration: Integration, connection_id: str, connection_config: Mapping[str, Any]
) -> Connection:
    """The connection as it will be, before it has credentials or a row: what the
    catalogue's templates are completed from."""
    return Connection(
        id=0,
        environment_id=integration.environment_id,
        integration_id=integration.id,
        provider_config_key=integration.unique_key,
        provider=integration.provider,
        connection_id=connection_id,
        credentials={},
        connection_config=dict(connection_config),
    )


def completed_url(
    template: str, draft: Connection, *, skip_encode: Iterable[str] = (), what: str
) -> str:
    """A catalogue URL with its `${connectionConfig.*}` values filled in, URI-encoded
    unless the provider lists `base_url` under `skip_encode`."""
    encode = "base_url" not in set(skip_encode)
    values = url_values(draft, with_credentials=False, encode=encode)
    return _complete(template, values, what)


def completed_params(
    params: object, draft: Connection, integration: Integration, *, what: str
) -> dict[str, str]:
    """A catalogue parameter map (`authorization_params`, `token_params`, ...) with its
    string values completed; other scalars are spelled as text."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise AuthorizationError("provider_config_err", f"the provider's {what} is not a mapping")
    values = template_values(draft, integration)
    completed: dict[str, str] = {}
    for key, value in params.items():
        name = f"{what}.{key}"
        if isinstance(value, str):
            completed[str(key)] = _complete(value, values, name)
        elif isinstance(value, bool):
            completed[str(key)] = "true" if value else "false"
        elif value is not None:
            completed[str(key)] = str(value)
    return completed


def _complete(template: str, values: Mapping[str, Any], what: str) -> str:
    result = interpolate_complete(template, values)
    if result is None:
        needed = ", ".join(missing_names(template, values))
        raise AuthorizationError(
            "url_param_err", f"{what} needs connection configuration that was not given: {needed}"
        )
    return result


def check_outbound(url: str, *, allow_private: bool, what: str) -> None:
    """Refuse a provider URL the outbound (SSRF) policy forbids; host names are checked
    again, resolved, when the server itself connects."""
    try:
        check_url(url, allow_private=allow_private)
    except OutboundBlocked as blocked:
        raise AuthorizationError(
            "url_param_err", f"the {what} is refused by the outbound policy ({blocked.reason})"
        ) from None


def query_string(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(
        f"{quote(key, safe=_QUERY_SAFE)}={quote(value, safe=_QUERY_SAFE)}" for key, value in pairs
    )


def with_query(url: str, query: str) -> str:
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def scope_list(*sources: object) -> list[str]:
    """Scopes from the first source that has any: a comma-separated string or a list."""
    for source in sources:
        if isinstance(source, str) and source.strip():
            return [scope.strip() for scope in source.split(",") if scope.strip()]
        if isinstance(source, list) and source:
            return [str(scope) for scope in source if str(scope)]
    return []


def provider_text(definition: JsonDict, key: str, default: str) -> str:
    value = definition.get(key)
    return value if isinstance(value, str) and value else default
