"""The data-plane application: `/proxy/*`, `/health`, `/ready`, `/metrics`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web

from credentials.runtime import CoreServices
from proxy import metrics
from proxy.handler import proxy_handler
from proxy.pipeline import PipelineDeps, build_pipeline
from proxy.settings import ProxySettings
from proxy.stages.ratelimit import RATE_LIMITER, rate_limiter
from proxy.targets import TargetCache
from proxy.upstream import Upstream

CORE = web.AppKey("core", CoreServices)
TARGETS = web.AppKey("targets", TargetCache)


def add_proxy_routes(app: web.Application, settings: ProxySettings, core: CoreServices) -> None:
    targets = TargetCache(
        core.store,
        core.catalogue,
        ttl=settings.cache_ttl,
        due_at=core.refresher.due_at,
        shared=core.connection_cache,
    )
    core.changes.subscribe(targets.on_change, reset=targets.clear)
    upstream = Upstream(settings)
    app[TARGETS] = targets
    app.cleanup_ctx.append(_upstream_lifetime(upstream))
    limiter = rate_limiter(settings.rate_limits, core.redis, prefix=core.settings.redis_prefix)
    app[RATE_LIMITER] = limiter
    deps = PipelineDeps(settings, core.keys, targets, core.refresher, upstream, limiter)
    pipeline = build_pipeline(deps)
    # `[\s\S]`, not `.`: aiohttp matches the decoded path, and `.` stops at a `%0A`, which
    # left such a target unrouted (a bare text/plain 404 instead of the pipeline's answer).
    app.router.add_route("*", r"/proxy{tail:[\s\S]*}", proxy_handler(pipeline))


def add_health_routes(app: web.Application, core: CoreServices) -> None:
    app[CORE] = core
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)


def add_metrics_route(app: web.Application) -> None:
    """`/metrics`, unauthenticated like `/health`; every role serves it (see serving)."""
    app.router.add_get("/metrics", metrics_route)


async def metrics_route(request: web.Request) -> web.Response:
    body, content_type = await metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def health(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    is_ready, checks = await request.app[CORE].readiness()
    return _json(200 if is_ready else 503, {"ready": is_ready, "checks": checks})


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _upstream_lifetime(upstream: Upstream) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await upstream.start()
        yield
        await upstream.close()

    return lifetime
