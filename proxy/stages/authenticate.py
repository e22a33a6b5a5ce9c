"""Stage 1: the caller's secret key selects exactly one environment."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from credentials.keys import SecretKeyResolver
from credentials.secret_keys import parse_bearer
from proxy import compat
from proxy.context import ProxyContext
from proxy.errors import AuthenticationFailed
from proxy.pipeline_types import Stage


def authenticate(keys: SecretKeyResolver) -> Stage:
    async def look_up(ctx: ProxyContext, key: str) -> None:
        environment = await keys.environment_for(key)
        if environment is None:
            raise AuthenticationFailed(compat.UNKNOWN_ACCOUNT)
        ctx.environment = environment

    def stage(ctx: ProxyContext) -> Coroutine[Any, Any, None] | None:
        parsed = parse_bearer(ctx.request.headers.get(compat.AUTHORIZATION))
        if parsed.error is not None:
            raise AuthenticationFailed(parsed.error)
        assert parsed.key is not None
        environment = keys.known_environment(parsed.key)
        if environment is None:
            return look_up(ctx, parsed.key)
        ctx.environment = environment
        return None

    return stage
