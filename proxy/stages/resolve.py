"""Stage 3: find the connection and build the upstream URL, within the outbound policy."""

from __future__ import annotations

from aiohttp import web

from credentials.outbound import OutboundBlocked, check_url
from proxy import compat
from proxy.context import ProxyContext
from proxy.errors import OutboundRefused, ProviderConfigError
from proxy.pipeline_types import Next, Stage
from proxy.targets import TargetCache
from proxy.urls import endpoint_from_target, join_url


def resolve(targets: TargetCache, *, allow_private: bool) -> Stage:
    async def stage(ctx: ProxyContext, following: Next) -> web.StreamResponse:
        params = ctx.control
        target = await targets.get(ctx.env.id, params.provider_config_key, params.connection_id)
        ctx.target = target
        base = params.base_url_override or target.base_url
        if base is None:
            raise ProviderConfigError(
                target.base_url_problem or "no base URL", code=compat.MISSING_CONNECTION_CONFIG
            )
        url = join_url(base, endpoint_from_target(ctx.request.raw_path))
        try:
            check_url(url, allow_private=allow_private)
        except OutboundBlocked as blocked:
            raise OutboundRefused.blocked(blocked.host, blocked.reason) from None
        ctx.endpoint_url = ctx.url = url
        return await following(ctx)

    return stage
