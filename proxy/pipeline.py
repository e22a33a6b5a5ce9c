"""The proxy pipeline: every proxied request goes through this one ordered list.

Each stage fills in its part of the context and answers the caller only by raising a
`ProxyError`. A stage that can finish without I/O (the warm path: cached key, cached
connection, fresh token) returns None; one that must wait returns the coroutine to
await. The terminal stage (`forward`) writes the provider's answer and is added here,
never by a caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from credentials.keys import SecretKeyResolver
from credentials.refresh import Refresher
from proxy.context import ProxyContext
from proxy.pipeline_types import Stage, Terminal
from proxy.settings import ProxySettings
from proxy.stages.authenticate import authenticate
from proxy.stages.forward import forward
from proxy.stages.freshen import freshen, reauthorizer
from proxy.stages.inject import inject
from proxy.stages.parse import parse
from proxy.stages.ratelimit import rate_limit
from proxy.stages.resolve import resolve
from proxy.targets import TargetCache
from proxy.upstream import Upstream
from ratelimit.limiter import RateLimiter


@dataclass(frozen=True, slots=True)
class PipelineDeps:
    settings: ProxySettings
    keys: SecretKeyResolver
    targets: TargetCache
    refresher: Refresher
    upstream: Upstream
    rate_limiter: RateLimiter | None = None


def build_pipeline(deps: PipelineDeps) -> Terminal:
    stages: list[Stage] = [
        authenticate(deps.keys),
        parse(),
        resolve(deps.targets, allow_private=deps.settings.allow_private_upstreams),
    ]
    # No limit configured anywhere: no stage, not even a lookup.
    if deps.rate_limiter is not None and deps.rate_limiter.enabled:
        stages.append(rate_limit(deps.rate_limiter, deps.settings))
    stages += [
        freshen(deps.refresher, deps.targets),
        inject(),
    ]
    reauthorize = reauthorizer(deps.refresher, deps.targets)
    return chain(stages, forward(deps.upstream, deps.settings, reauthorize))


def chain(stages: Sequence[Stage], terminal: Terminal) -> Terminal:
    ordered = tuple(stages)

    async def run(ctx: ProxyContext) -> None:
        for stage in ordered:
            pending = stage(ctx)
            if pending is not None:
                await pending
        await terminal(ctx)

    return run
