"""One proxied request: inbound request → pipeline → reply, the log line and the metrics."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable

from credentials.activity import ActivityLog
from credentials.database import StoreUnavailable
from proxy import metrics
from proxy.access_log import log_request
from proxy.context import ProxyContext
from proxy.errors import ProxyError, StoreUnreachable, error_answer
from proxy.http.server import ClientDisconnected, Handler, Reply, Request
from proxy.pipeline_types import Terminal

log = logging.getLogger("authgate.proxy")


def proxy_handler(pipeline: Terminal, activity: ActivityLog | None = None) -> Handler:
    next_request_id = request_ids()

    async def handle(request: Request, reply: Reply) -> None:
        ctx = ProxyContext(request, reply, next_request_id(), time.perf_counter())
        metrics.request_started()
        try:
            await pipeline(ctx)
        except ProxyError as error:
            _answer(ctx, error)
        except StoreUnavailable as outage:
            # Expected while the database is down: a warning without traceback, and a
            # 503 the client can retry, never a 500.
            log.warning(
                "credential store unavailable: %s", outage, extra={"request_id": ctx.request_id}
            )
            _answer(ctx, StoreUnreachable())
        except ClientDisconnected:
            ctx.outcome.error_code = "client_disconnected"
        except Exception:
            log.exception("unexpected proxy failure", extra={"request_id": ctx.request_id})
            _answer(ctx, ProxyError("Internal error; the request id identifies it"))
        finally:
            log_request(ctx, activity)
            metrics.request_finished(ctx, now=time.perf_counter())

    return handle


def request_ids() -> Callable[[], str]:
    """Unique 32-hex-digit request ids: a random per-process prefix and a counter.

    `uuid4()` costs a random read per request; uniqueness is all an id needs.
    """
    prefix = os.urandom(10).hex()
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):012x}"


def _answer(ctx: ProxyContext, error: ProxyError) -> None:
    ctx.outcome.status = error.status
    ctx.outcome.error_code = error.code
    if ctx.reply.started:
        # The provider's status line is out: an error now can only cut the stream.
        ctx.reply.abort()
        return
    status, headers, body = error_answer(error, ctx.request_id)
    ctx.reply.respond(status, headers, body)
