"""Stage 3: find the connection and build the upstream URL, within the outbound policy."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from credentials.outbound import OutboundBlocked, check_url
from proxy import compat
from proxy.context import ProxyContext, Target
from proxy.errors import InvalidUpstreamRequest, OutboundRefused, ProviderConfigError
from proxy.pipeline_types import Stage
from proxy.targets import TargetCache
from proxy.urls import endpoint_from_target, join_url

# Base URLs already found allowed. The endpoint is appended after a `/`, so it can never
# change the host: checking the base once is checking every URL built on it. The client's
# resolver still checks every address it connects to.
_MAX_CHECKED_BASES = 1024


def resolve(targets: TargetCache, *, allow_private: bool) -> Stage:
    allowed: set[str] = set()

    def check_base(base: str) -> None:
        if base in allowed:
            return
        try:
            check_url(base, allow_private=allow_private)
        except OutboundBlocked as blocked:
            raise OutboundRefused.blocked(blocked.host, blocked.reason) from None
        if len(allowed) >= _MAX_CHECKED_BASES:
            allowed.clear()
        allowed.add(base)

    def settle(ctx: ProxyContext, target: Target) -> None:
        ctx.target = target
        params = ctx.control
        base = params.base_url_override or target.base_url
        if base is None:
            raise ProviderConfigError(
                target.base_url_problem or "no base URL", code=compat.MISSING_CONNECTION_CONFIG
            )
        check_base(base)
        try:
            endpoint = endpoint_from_target(ctx.request.raw_path)
        except ValueError:
            raise InvalidUpstreamRequest("The request target is not under /proxy/") from None
        ctx.endpoint_url = ctx.url = join_url(base, endpoint)

    async def load(ctx: ProxyContext) -> None:
        params = ctx.control
        settle(ctx, await targets.get(ctx.env.id, params.provider_config_key, params.connection_id))

    def stage(ctx: ProxyContext) -> Coroutine[Any, Any, None] | None:
        params = ctx.control
        target = targets.cached(ctx.env.id, params.provider_config_key, params.connection_id)
        if target is None:
            return load(ctx)
        settle(ctx, target)
        return None

    return stage
