"""Pure pieces of a token request: the endpoint URL, parameters, client authentication, and
the encoded `TokenCall`.

Templates come from the provider catalogue and are completed from the connection; a
template that does not complete is a configuration problem (`misconfigured`), reported
by the names it needs, never by the values it had.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import orjson

from credentials.grants.base import misconfigured
from credentials.grants.http import TokenCall
from credentials.models import Connection, JsonDict, Provider
from credentials.providers import token_url
from credentials.templates import clean_connection_config, interpolate_complete, placeholders

FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE: Final = "application/json"
BODY_FORMATS: Final = frozenset({"form", "json", "query"})
# encodeURIComponent's unreserved set, which Nango's URL builder applies to config values.
_URI_COMPONENT_SAFE: Final = "!*'()"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """An OAuth client: `secret` is None for a public client."""

    client_id: str
    secret: str | None = field(default=None, repr=False)


# --- the endpoint -------------------------------------------------------------------


def endpoint_url(
    provider: Provider,
    mode: str,
    connection: Connection,
    *,
    with_credentials: bool = False,
    template: str | None = None,
) -> str:
    """The provider's token URL for `mode`, completed from the connection.

    Values are URL-encoded as a URI component (as Nango does) unless the provider lists
    `base_url` in `token_url_skip_encode`. `template` replaces the catalogue's token URL
    (TWO_STEP's `refresh_url`).
    """
    raw = template if template is not None else token_url(provider, mode)
    if not raw:
        raise misconfigured(f"provider {provider.name!r} has no token_url for {mode}")
    skip = provider.definition.get("token_url_skip_encode") or ()
    encode = "base_url" not in skip
    values = url_values(connection, with_credentials=with_credentials, encode=encode)
    return complete(raw, values, what="token_url")


def url_values(connection: Connection, *, with_credentials: bool, encode: bool) -> JsonDict:
    """The namespaces a token URL template may use."""
    config = clean_connection_config(connection.connection_config or {})
    convert = _uri_component_tree if encode else _identity
    values: JsonDict = {"connectionConfig": convert(config), "connection_config": convert(config)}
    if with_credentials:
        values["credentials"] = convert(dict(connection.credentials or {}))
    return values


def _identity(value: Any) -> Any:
    return value


def _uri_component_tree(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip(".") == "":
            # "." and ".." survive percent-encoding as unreserved characters, and URL
            # parsing would resolve them as path segments: spell every dot as %2E.
            return value.replace(".", "%2E")
        return quote(value, safe=_URI_COMPONENT_SAFE)
    if isinstance(value, Mapping):
        return {key: _uri_component_tree(item) for key, item in value.items()}
    return value


# --- templates ----------------------------------------------------------------------


def complete(template: str, values: Mapping[str, Any], *, what: str) -> str:
    """`template` with every placeholder filled, or GrantError misconfigured naming the
    values it still needs."""
    result = interpolate_complete(template, values)
    if result is None:
        needed = missing_names(template, values)
        raise misconfigured(f"{what} could not be completed (needs {', '.join(needed)})")
    return result


def missing_names(template: str, values: Mapping[str, Any]) -> list[str]:
    names = [
        name
        for name in placeholders(template)
        if interpolate_complete("${" + name + "}", values) is None
    ]
    return names or ["an unsupported template function"]


def complete_params(params: object, values: Mapping[str, Any], *, what: str) -> JsonDict:
    """A catalogue parameter map with its string values completed; other scalars and
    lists pass through (they are encoded with the body)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise misconfigured(f"{what} must be a mapping")
    completed: JsonDict = {}
    for key, value in params.items():
        name = f"{what}.{key}"
        if isinstance(value, str):
            completed[str(key)] = complete(value, values, what=name)
        elif isinstance(value, list):
            completed[str(key)] = [
                complete(item, values, what=name) if isinstance(item, str) else item
                for item in value
            ]
        else:
            completed[str(key)] = value
    return completed


def complete_headers(headers: object, values: Mapping[str, Any], *, what: str) -> dict[str, str]:
    completed = complete_params(headers, values, what=what)
    return {key: form_text(value) for key, value in completed.items()}


# --- client authentication ----------------------------------------------------------


def client_from(*sources: Mapping[str, Any] | None) -> ClientCredentials | None:
    """The first source that names a client_id, with its secret (if any)."""
    for source in sources:
        if not source:
            continue
        client_id = source.get("client_id")
        if isinstance(client_id, str) and client_id:
            secret = source.get("client_secret")
            return ClientCredentials(client_id, secret if isinstance(secret, str) else None)
    return None


def basic_authorization(client: ClientCredentials) -> str:
    """`Basic base64(id:secret)`, the spelling providers accept (values not form-encoded)."""
    if client.secret is None:
        raise misconfigured("basic client authentication needs a client_secret")
    pair = f"{client.client_id}:{client.secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def uses_basic_auth(definition: Mapping[str, Any]) -> bool:
    return (
        definition.get("token_request_auth_method") == "basic"
        or definition.get("authorization_method") == "header"
    )


def body_client_fields(client: ClientCredentials) -> JsonDict:
    fields: JsonDict = {"client_id": client.client_id}
    if client.secret is not None:
        fields["client_secret"] = client.secret
    return fields


# --- encoding -----------------------------------------------------------------------


def body_format(definition: Mapping[str, Any], *, allowed: frozenset[str] = BODY_FORMATS) -> str:
    value = definition.get("body_format") or "form"
    if value not in allowed:
        raise misconfigured(f"body_format {value!r} is not supported here")
    return str(value)


def build_call(
    url: str,
    params: Mapping[str, Any],
    *,
    method: str = "POST",
    encoding: str = "form",
    headers: Mapping[str, str] | None = None,
) -> TokenCall:
    """Encode `params` as a form or JSON body, or into the query (`query`, or any GET)."""
    all_headers = dict(headers or {})
    method = method.upper()
    if encoding == "query" or method == "GET":
        return TokenCall(method, with_query(url, params), all_headers)
    if encoding == "json":
        all_headers.setdefault("Content-Type", JSON_CONTENT_TYPE)
        return TokenCall(method, url, all_headers, orjson.dumps(dict(params)))
    all_headers.setdefault("Content-Type", FORM_CONTENT_TYPE)
    return TokenCall(method, url, all_headers, form_encode(params).encode("ascii"))


def client_authenticated_call(
    url: str,
    params: JsonDict,
    definition: Mapping[str, Any],
    client: ClientCredentials,
    *,
    encoding: str,
) -> TokenCall:
    """A token call carrying the client's credentials where the provider wants them: a
    Basic header (`token_request_auth_method: basic`) or fields of the body."""
    headers = {"Accept": "application/json"}
    if uses_basic_auth(definition):
        headers["Authorization"] = basic_authorization(client)
    else:
        params.update(body_client_fields(client))
    return build_call(url, params, encoding=encoding, headers=headers)


def form_encode(params: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        items = value if isinstance(value, list) else [value]
        pairs.extend((key, form_text(item)) for item in items if item is not None)
    return urlencode(pairs)


def form_text(value: Any) -> str:
    """A parameter value as text, spelled the way a JavaScript client would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    return orjson.dumps(value).decode()


def with_query(url: str, params: Mapping[str, Any]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    extra = form_encode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))
