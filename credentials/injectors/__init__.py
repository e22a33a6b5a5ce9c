"""Credential injection: which headers and query parameters a connection's calls carry.

`build_injection` runs when a connection enters the cache, not per request: it picks the
default auth header by the stored credential `type` (one module per auth mode), then lets
the provider's `proxy.headers` override it per name and adds `proxy.query`.

Modes that sign each request (OAUTH1) have no static default header; they put a
`signer` on the Injection instead, which the proxy calls per request with the method and
the final URL. Its headers rank as the default auth header: provider templates of the
same name override them.

Templates that do not fully resolve are dropped rather than sent with `${...}` in them
(Nango sends some of them literally). Templates that need per-request values (method,
path, host, now, random, ...) are kept raw in `dynamic_headers`; the proxy renders them per
request with `render_dynamic`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from credentials.injectors import api_key, basic, bearer_token, none, oauth1, oauth2
from credentials.injectors.base import (
    DefaultAuth,
    InjectionError,
    InvalidCredentialValue,
    Pairs,
    RequestSigner,
    UnsignableRequest,
    UnsupportedAuth,
    safe_header_value,
)
from credentials.models import Connection, Integration, Provider
from credentials.templates import (
    Clock,
    RandomSource,
    interpolate_complete,
    random_uuid,
    request_dependent,
    template_values,
    utc_now,
)

__all__ = [
    "DEFAULT_AUTH",
    "Injection",
    "InjectionError",
    "InvalidCredentialValue",
    "Pairs",
    "RequestSigner",
    "UnsignableRequest",
    "UnsupportedAuth",
    "build_injection",
    "credential_type",
    "render_dynamic",
]

DEFAULT_AUTH: Final[Mapping[str, DefaultAuth]] = MappingProxyType(
    {
        auth_type: module.default_auth
        for module in (oauth2, oauth1, bearer_token, basic, api_key, none)
        for auth_type in module.AUTH_TYPES
    }
)

SignerFactory = Callable[[Mapping[str, Any], Provider, Integration | None], RequestSigner]
# Credential types whose requests are signed one by one, and how to build their signer.
SIGNERS: Final[Mapping[str, SignerFactory]] = MappingProxyType(
    {auth_type: oauth1.request_signer for auth_type in oauth1.AUTH_TYPES}
)

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, repr=False)
class Injection:
    """What every call through one connection carries. Header names are lower case.

    `dynamic_values` holds the connection's template values for `render_dynamic`; it is
    empty unless there are dynamic headers, and never part of repr or equality.
    `signer`, when set, makes the per-request signature headers (method, final URL).
    """

    headers: Pairs
    query: Pairs = ()
    dynamic_headers: Pairs = ()
    dynamic_values: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)
    signer: RequestSigner | None = None

    def __repr__(self) -> str:
        # Values are credentials: show names only, so a stray log line leaks nothing.
        names = [name for name, _ in self.headers]
        query = [name for name, _ in self.query]
        dynamic = [name for name, _ in self.dynamic_headers]
        # A signer's own repr must hide its secrets (OAuth1Signer's does).
        return (
            f"Injection(headers={names}, query={query}, dynamic_headers={dynamic}, "
            f"signer={self.signer!r})"
        )


def credential_type(credentials: Mapping[str, Any]) -> str:
    """The stored `type`; an empty credential object is the unauthenticated NONE."""
    value = credentials.get("type")
    if value is None or value == "":
        return "NONE"
    return value if isinstance(value, str) else type(value).__name__


def build_injection(
    connection: Connection, provider: Provider, integration: Integration | None
) -> Injection:
    """Everything a connection's calls carry, computed once when it enters the cache.

    Raises UnsupportedAuth for credential types without an injector, and
    InvalidCredentialValue (naming the field, never the value) for unusable credentials.
    """
    proxy = provider.proxy
    # Provider objects built by hand may not have lower-cased their header names.
    templates = {name.lower(): t for name, t in proxy.headers.items()} if proxy else {}
    queries = proxy.query if proxy is not None else {}
    credentials = connection.credentials or {}
    headers = _default_headers(credentials, templates)
    signer_factory = SIGNERS.get(credential_type(credentials))
    signer = signer_factory(credentials, provider, integration) if signer_factory else None
    if not templates and not queries:
        return Injection(headers=tuple(headers.items()), signer=signer)
    values = template_values(connection, integration)
    static = {name: t for name, t in templates.items() if not request_dependent(t)}
    dynamic = tuple((name, t) for name, t in templates.items() if name not in static)
    headers.update(_render_headers(static, values))
    return Injection(
        headers=tuple(headers.items()),
        query=_render_query(queries, values),
        dynamic_headers=dynamic,
        dynamic_values=MappingProxyType(values) if dynamic else _EMPTY,
        signer=signer,
    )


def _default_headers(
    credentials: Mapping[str, Any], templates: Mapping[str, str]
) -> dict[str, str]:
    auth_type = credential_type(credentials)
    default_auth = DEFAULT_AUTH.get(auth_type)
    if default_auth is None:
        raise UnsupportedAuth(auth_type)
    if auth_type == "TWO_STEP" and bearer_token.provider_carries_token(templates):
        return {}
    return dict(default_auth(credentials))


def render_dynamic(
    injection: Injection,
    values: Mapping[str, Any],
    *,
    clock: Clock = utc_now,
    random_source: RandomSource = random_uuid,
) -> Pairs:
    """The complete headers for one request: `headers`, overridden by the dynamic ones.

    `values` are the request's (method, path, endpoint, host, params, ...), layered over
    the connection's. One `now` and one `random` serve every header, so a date header and
    a signature over it agree. A dynamic header that does not resolve is dropped and the
    static one of the same name (the default auth header, say) stays.
    """
    if not injection.dynamic_headers:
        return injection.headers
    moment = clock()
    random_value = random_source()
    rendered = _render_headers(
        dict(injection.dynamic_headers),
        {**injection.dynamic_values, **values},
        clock=lambda: moment,
        random_source=lambda: random_value,
    )
    headers = dict(injection.headers)
    headers.update(rendered)
    return tuple(headers.items())


def _render_headers(
    templates: Mapping[str, str],
    values: Mapping[str, Any],
    *,
    clock: Clock = utc_now,
    random_source: RandomSource = random_uuid,
) -> dict[str, str]:
    """Rendered headers; an unresolved or empty one is left out."""
    headers: dict[str, str] = {}
    for name, template in templates.items():
        value = interpolate_complete(template, values, clock=clock, random_source=random_source)
        if value is None or not value.strip():
            continue
        if not safe_header_value(value):
            # The value comes from a credential or config field: name the header only.
            raise InvalidCredentialValue("template", f"header {name}", "contains a line break")
        headers[name] = value
    return headers


def _render_query(templates: Mapping[str, str], values: Mapping[str, Any]) -> Pairs:
    """Rendered query additions; unresolved, empty or per-request ones are left out."""
    query: list[tuple[str, str]] = []
    for name, template in templates.items():
        if request_dependent(template):
            continue  # no provider needs this; rendering it once would freeze now/random
        value = interpolate_complete(template, values)
        if value:
            query.append((name, value))
    return tuple(query)
