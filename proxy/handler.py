"""The aiohttp route: inbound request → pipeline → response, the log line and the metrics."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from credentials.database import StoreUnavailable
from proxy import metrics
from proxy.access_log import log_request
from proxy.context import ProxyContext
from proxy.errors import ProxyError, StoreUnreachable, error_response
from proxy.pipeline_types import Next

log = logging.getLogger("authgate.proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def proxy_handler(pipeline: Next) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = ProxyContext(
            request=request, request_id=uuid.uuid4().hex, started=time.perf_counter()
        )
        metrics.request_started()
        try:
            return await pipeline(ctx)
        except ProxyError as error:
            return _answer(ctx, error)
        except StoreUnavailable as outage:
            # Expected while the database is down: a warning without traceback, and a
            # 503 the client can retry, never a 500.
            log.warning(
                "credential store unavailable: %s", outage, extra={"request_id": ctx.request_id}
            )
            return _answer(ctx, StoreUnreachable())
        except Exception:
            log.exception("unexpected proxy failure", extra={"request_id": ctx.request_id})
            return _answer(ctx, ProxyError("Internal error; the request id identifies it"))
        finally:
            log_request(ctx)
            metrics.request_finished(ctx, now=time.perf_counter())

    return handle


def _answer(ctx: ProxyContext, error: ProxyError) -> web.StreamResponse:
    ctx.outcome.status = error.status
    ctx.outcome.error_code = error.code
    return error_response(error, ctx.request_id)
