"""The data plane: `/proxy/*`, `/health`, `/ready` and `/metrics` on the lean server.

`DataPlane` holds what proxied requests share in a process (target cache, upstream pool,
rate limiter, activity log); `routes` dispatches a request to it by path. Anything else
goes to `fallback` (the management API in `authgate serve`) or is a JSON 404.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from credentials.activity import ActivityLog, ActivitySettings
from credentials.runtime import CoreServices
from proxy import metrics
from proxy.handler import proxy_handler
from proxy.http.server import Handler, Reply, Request
from proxy.pipeline import PipelineDeps, build_pipeline
from proxy.settings import ProxySettings
from proxy.stages.ratelimit import rate_limiter
from proxy.targets import TargetCache
from proxy.upstream import Upstream
from proxy.urls import origin_form
from ratelimit.limiter import RateLimiter

_JSON = [("Content-Type", "application/json")]
_READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(slots=True)
class DataPlane:
    core: CoreServices
    targets: TargetCache
    upstream: Upstream
    rate_limiter: RateLimiter
    activity: ActivityLog | None
    handle_proxy: Handler
    draining: bool = False
    """Set when the process starts to stop: `/ready` fails from then on."""

    async def start(self) -> None:
        await self.upstream.start()
        if self.activity is not None:
            self.activity.start()

    async def close(self) -> None:
        """Before the core closes: queued activity entries still need the store."""
        if self.activity is not None:
            await self.activity.close()
        await self.upstream.close()


def build_data_plane(
    settings: ProxySettings, core: CoreServices, activity: ActivitySettings
) -> DataPlane:
    targets = TargetCache(
        core.store,
        core.catalogue,
        ttl=settings.cache_ttl,
        due_at=core.refresher.due_at,
        shared=core.connection_cache,
    )
    core.changes.subscribe(targets.on_change, reset=targets.clear)
    upstream = Upstream(settings)
    limiter = rate_limiter(settings.rate_limits, core.redis, prefix=core.settings.redis_prefix)
    deps = PipelineDeps(settings, core.keys, targets, core.refresher, upstream, limiter)
    activity_log = ActivityLog(core.store.db, activity) if activity.enabled else None
    handle = proxy_handler(build_pipeline(deps), activity_log)
    return DataPlane(core, targets, upstream, limiter, activity_log, handle)


def routes(plane: DataPlane, fallback: Handler | None = None) -> Handler:
    async def route(request: Request, reply: Reply) -> None:
        path = request.raw_path
        if not path.startswith("/"):
            path = _origin_form_or_root(path)
        if is_proxy_path(path):
            await plane.handle_proxy(request, reply)
            return
        local = _LOCAL.get(path.partition("?")[0])
        if local is not None and request.method in _READ_METHODS:
            await local(plane, reply)
        elif fallback is not None:
            await fallback(request, reply)
        elif local is not None:
            _json(reply, 405, _error("method_not_allowed", f"{request.method} is not allowed"))
        else:
            _json(reply, 404, _error("not_found", "Not found"))

    return route


def is_proxy_path(path: str) -> bool:
    # Every target under the prefix, `/proxy%0A` included: the pipeline gives such a
    # target its proper answer, where a fall-through would give a bare 404.
    return path.startswith("/proxy")


async def health(plane: DataPlane, reply: Reply) -> None:
    _json(reply, 200, {"status": "ok"})


async def ready(plane: DataPlane, reply: Reply) -> None:
    is_ready, checks = await plane.core.readiness(draining=plane.draining)
    _json(reply, 200 if is_ready else 503, {"ready": is_ready, "checks": checks})


async def metrics_route(plane: DataPlane, reply: Reply) -> None:
    body, content_type = await metrics.exposition()
    reply.respond(200, [("Content-Type", content_type)], body)


_LOCAL = {"/health": health, "/ready": ready, "/metrics": metrics_route}
LOCAL_ROUTES = tuple(_LOCAL)


def _origin_form_or_root(target: str) -> str:
    try:
        return origin_form(target)
    except ValueError:
        return "/"


def _error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def _json(reply: Reply, status: int, body: object) -> None:
    reply.respond(status, _JSON, orjson.dumps(body))
