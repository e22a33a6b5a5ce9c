"""Stage 1: the caller's secret key selects exactly one environment."""

from __future__ import annotations

from credentials.keys import SecretKeyResolver
from credentials.secret_keys import parse_bearer
from proxy import compat
from proxy.context import ProxyContext
from proxy.errors import AuthenticationFailed
from proxy.pipeline_types import Next, Stage


def authenticate(keys: SecretKeyResolver) -> Stage:
    async def stage(ctx: ProxyContext, following: Next) -> None:
        parsed = parse_bearer(ctx.request.headers.get(compat.AUTHORIZATION))
        if parsed.error is not None:
            raise AuthenticationFailed(parsed.error)
        assert parsed.key is not None
        environment = await keys.environment_for(parsed.key)
        if environment is None:
            raise AuthenticationFailed(compat.UNKNOWN_ACCOUNT)
        ctx.environment = environment
        await following(ctx)

    return stage
