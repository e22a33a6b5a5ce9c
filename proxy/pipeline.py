"""The proxy pipeline: every proxied request goes through this one ordered list.

Each stage has the shape of a middleware: it gets the context and the rest of the
pipeline, and either answers by raising a `ProxyError` or awaits `following`. The
terminal stage (`forward`) writes the provider's answer and is added here, never by a
caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from credentials.keys import SecretKeyResolver
from credentials.refresh import Refresher
from proxy.pipeline_types import Next, Stage
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


def build_pipeline(deps: PipelineDeps) -> Next:
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


def chain(stages: Sequence[Stage], terminal: Next) -> Next:
    handler = terminal
    for stage in reversed(stages):
        # A partial, not a wrapper coroutine: one frame per stage on every request.
        handler = partial(stage, following=handler)
    return handler
