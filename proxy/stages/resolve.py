"""Stage 3: find the connection and build the upstream URL, within the outbound policy."""

from __future__ import annotations

from credentials.outbound import OutboundBlocked, check_url
from proxy import compat
from proxy.context import ProxyContext
from proxy.errors import InvalidUpstreamRequest, OutboundRefused, ProviderConfigError
from proxy.pipeline_types import Next, Stage
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

    async def stage(ctx: ProxyContext, following: Next) -> None:
        params = ctx.control
        target = await targets.get(ctx.env.id, params.provider_config_key, params.connection_id)
        ctx.target = target
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
        await following(ctx)

    return stage
