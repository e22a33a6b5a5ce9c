"""Stage 4: the outbound headers — the caller's forwardable headers over fresh credentials.

Sanitise first, inject second: the caller's control headers and its own Authorization
are dropped before the connection's credential headers are laid in, so nothing the
caller sends can strip what is injected. Layers, lowest first: the caller's plain
`Accept`; the injected credential and provider headers; the caller's body description
and its `Nango-Proxy-` headers (so `Nango-Proxy-Authorization` can override, as in Nango).

`apply_credentials` is a plain function of the resolved target, the endpoint URL and the
inbound request, so it runs again for a replay after a credential refresh: credential
query parameters are re-added, per-request headers rendered and signatures made afresh.
"""

from __future__ import annotations

from credentials.injectors import Pairs, UnsignableRequest, render_dynamic
from credentials.templates import request_values
from proxy.context import ProxyContext
from proxy.errors import InvalidCredentials, InvalidUpstreamRequest
from proxy.headers import Header, apply_overrides, caller_header_layers
from proxy.pipeline_types import Stage
from proxy.urls import add_query, endpoint_from_target, wire_url


def inject() -> Stage:
    def stage(ctx: ProxyContext) -> None:
        apply_credentials(ctx)

    return stage


def apply_credentials(ctx: ProxyContext) -> None:
    """Set the final URL and headers of the upstream request from `ctx.resolved`."""
    target = ctx.resolved
    if target.injection_problem is not None:
        raise InvalidCredentials(target.injection_problem)
    query = target.injection.query
    ctx.url = add_query(ctx.endpoint_url, query) if query else ctx.endpoint_url
    injected = injected_headers(ctx)
    ctx.headers = outbound_headers(ctx, injected)
    ctx.injected_header_names = frozenset(name.lower() for name, _ in injected)


def outbound_headers(ctx: ProxyContext, injected: Pairs | None = None) -> list[Header]:
    """Every header of the upstream request: the caller's around the injected ones.

    `injected` defaults to a fresh `injected_headers(ctx)`; pass it to reuse headers
    already computed for this attempt.
    """
    if injected is None:
        injected = injected_headers(ctx)
    defaults, overrides = caller_header_layers(ctx.request.headers.items())
    return apply_overrides(apply_overrides(defaults, injected), overrides)


def injected_headers(ctx: ProxyContext) -> Pairs:
    """The connection's headers for this request: credentials and provider headers,
    per-request templates rendered now, and a fresh signature when the mode signs."""
    injection = ctx.resolved.injection
    headers = injection.headers
    if injection.dynamic_headers:
        headers = render_dynamic(injection, _request_values(ctx))
    if injection.signer is None:
        return headers
    # Sign the URL exactly as it goes on the wire (the upstream client sends wire_url).
    try:
        signed = injection.signer(ctx.request.method, wire_url(ctx.url))
    except UnsignableRequest as problem:
        raise InvalidUpstreamRequest(f"The upstream request cannot be signed: {problem}") from None
    # The signature is the mode's default auth header: provider templates override it.
    return tuple(apply_overrides(signed, headers))


def _request_values(ctx: ProxyContext) -> dict[str, str]:
    return request_values(
        ctx.request.method,
        ctx.url,
        endpoint=endpoint_from_target(ctx.request.raw_path),
        content_type=ctx.request.headers.get("Content-Type"),
    )
