"""Stage 4: the outbound headers — the caller's forwardable headers over fresh credentials.

Sanitise first, inject second: the caller's control headers and its own Authorization
are dropped before the connection's credential headers are laid in, so nothing the
caller sends can strip what is injected. Layers, lowest first: the caller's plain
`Accept`; the injected credential and provider headers; the caller's body description
and its `Nango-Proxy-` headers (so `Nango-Proxy-Authorization` can override, as in Nango).
"""

from __future__ import annotations

from aiohttp import web

from credentials.injectors import render_dynamic
from credentials.templates import request_values
from proxy.context import ProxyContext
from proxy.headers import apply_overrides, caller_header_layers
from proxy.pipeline_types import Next, Stage
from proxy.urls import endpoint_from_target


def inject() -> Stage:
    async def stage(ctx: ProxyContext, following: Next) -> web.StreamResponse:
        injection = ctx.resolved.injection
        injected = injection.headers
        if injection.dynamic_headers:
            injected = render_dynamic(injection, _request_values(ctx))
        defaults, overrides = caller_header_layers(_decoded(ctx.request.raw_headers))
        ctx.headers = apply_overrides(apply_overrides(defaults, injected), overrides)
        ctx.injected_header_names = frozenset(name for name, _ in injected)
        return await following(ctx)

    return stage


def _decoded(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    # HTTP header bytes are Latin-1 by definition (RFC 9110 §5.5); this round-trips exactly.
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


def _request_values(ctx: ProxyContext) -> dict[str, str]:
    return request_values(
        ctx.request.method,
        ctx.url,
        endpoint=endpoint_from_target(ctx.request.raw_path),
        content_type=ctx.request.headers.get("Content-Type"),
    )
