"""Testing credentials an end user typed, before they are stored: the provider's
`proxy.verification` block (reference §3 and §6.6 step 6).

Each listed endpoint becomes one request built as the proxy would build it for the
finished connection: the same base URL (or the block's `base_url_override`), the same
injected headers and query, plus the block's own headers and JSON `data`. The requests go
through the strict token client (outbound policy, no redirects, capped body) one after
the other, and the first 2xx passes. A provider without the block accepts credentials
untested, as Nango does.

Failures say what was tried and what came back (method, path, status), never a
credential or the provider's body, which may echo one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from credentials.grants import GrantError, TokenCall
from credentials.grants.http import TokenHttp
from credentials.injectors import Injection, InjectionError, build_injection, render_dynamic
from credentials.injectors.base import safe_header_value
from credentials.models import Connection, Integration, Provider
from credentials.templates import (
    UnresolvedTemplate,
    interpolate_complete,
    request_values,
    resolve_base_url,
    template_values,
)
from credentials.urls import add_query, join_url

VERIFIED_METHODS: Final = frozenset({"GET", "POST"})
JSON_CONTENT_TYPE: Final = "application/json"


class CredentialsRejected(Exception):
    """The credentials could not be shown to work; the message says why, secret-free."""


def verification_spec(provider: Provider) -> Mapping[str, Any] | None:
    """The provider's `proxy.verification` block, if it declares endpoints."""
    proxy = provider.definition.get("proxy")
    spec = proxy.get("verification") if isinstance(proxy, Mapping) else None
    if not isinstance(spec, Mapping) or not _endpoints(spec):
        return None
    return spec


async def verify_credentials(
    http: TokenHttp, connection: Connection, integration: Integration, provider: Provider
) -> bool:
    """True when the provider accepted the credentials, False when it declares no test;
    raises CredentialsRejected when no endpoint answered 2xx."""
    spec = verification_spec(provider)
    if spec is None:
        return False
    outcomes: list[str] = []
    for call in verification_calls(spec, connection, integration, provider):
        try:
            reply = await http.send(call)
        except GrantError as failure:
            outcomes.append(f"{_described(call)} failed: {failure}")
            continue
        if 200 <= reply.status < 300:
            return True
        outcomes.append(f"{_described(call)} answered {reply.status}")
    raise CredentialsRejected(
        f"{provider.display_name} did not accept the credentials: {'; '.join(outcomes)}"
    )


# --- pure -------------------------------------------------------------------------


def verification_calls(
    spec: Mapping[str, Any], connection: Connection, integration: Integration, provider: Provider
) -> list[TokenCall]:
    """One request per endpoint of `spec`; raises CredentialsRejected when the
    connection lacks what the provider's URL or headers need."""
    method = str(spec.get("method") or "GET").upper()
    if method not in VERIFIED_METHODS:
        raise CredentialsRejected(f"The verification method {method!r} is not supported")
    injection = _injection(connection, integration, provider)
    values = template_values(connection, integration)
    base_url = _base_url(spec, provider, values)
    extra_headers = _spec_headers(spec.get("headers"), values)
    data = spec.get("data")
    body = orjson.dumps(data) if data is not None else None
    calls = []
    for endpoint in _endpoints(spec):
        url = add_query(join_url(base_url, endpoint), injection.query)
        content_type = JSON_CONTENT_TYPE if body is not None else None
        headers = dict(
            render_dynamic(injection, request_values(method, url, endpoint, content_type))
        )
        if content_type is not None:
            headers.setdefault("content-type", content_type)
        headers.update(extra_headers)
        calls.append(TokenCall(method, url, headers, body))
    return calls


def _endpoints(spec: Mapping[str, Any]) -> list[str]:
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list):
        return []
    return [endpoint for endpoint in endpoints if isinstance(endpoint, str) and endpoint]


def _injection(connection: Connection, integration: Integration, provider: Provider) -> Injection:
    try:
        return build_injection(connection, provider, integration)
    except InjectionError as problem:
        # Names the field and the problem, never the value.
        raise CredentialsRejected(f"The credentials cannot be used: {problem}") from None


def _base_url(spec: Mapping[str, Any], provider: Provider, values: Mapping[str, Any]) -> str:
    """The block's `base_url_override`, else the provider's proxy base URL, completed
    from the connection (the same `||` rule the proxy follows)."""
    override = spec.get("base_url_override")
    template = override if isinstance(override, str) and override else None
    if template is None and provider.proxy is not None:
        template = provider.proxy.base_url
    if not template:
        raise CredentialsRejected(
            f"The provider {provider.name!r} has no base URL to verify against"
        )
    try:
        return resolve_base_url(template, values)
    except UnresolvedTemplate as unresolved:
        raise CredentialsRejected(
            f"The verification URL needs {', '.join(unresolved.missing)} in the connection config"
        ) from None


def _spec_headers(headers: object, values: Mapping[str, Any]) -> dict[str, str]:
    """The block's own headers, lower-cased; one that does not resolve is left out."""
    if not isinstance(headers, Mapping):
        return {}
    rendered: dict[str, str] = {}
    for name, template in headers.items():
        value = interpolate_complete(str(template), values)
        if value is None or not value.strip():
            continue
        if not safe_header_value(value):
            raise CredentialsRejected(f"The verification header {name} contains a line break")
        rendered[str(name).lower()] = value
    return rendered


def _described(call: TokenCall) -> str:
    return f"{call.method} {urlsplit(call.url).path or '/'}"
