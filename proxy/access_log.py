"""The one structured log line per proxied request.

Only identifiers, sizes and timings go in: never header values, query values or bodies.
"""

from __future__ import annotations

import logging
import time

from proxy.context import ProxyContext
from proxy.urls import path_for_log

log = logging.getLogger("authgate.access")


def log_request(ctx: ProxyContext) -> None:
    outcome = ctx.outcome
    # Overhead is ours up to the first response byte; streaming time is the provider's.
    responded = outcome.responded_at or time.perf_counter()
    overhead = max(responded - ctx.started - outcome.upstream_seconds, 0.0)
    params = ctx.params
    log.info(
        "proxy",
        extra={
            "request_id": ctx.request_id,
            "environment": ctx.environment.name if ctx.environment else None,
            "integration": params.provider_config_key if params else None,
            "connection": params.connection_id if params else None,
            "method": ctx.request.method,
            "host": outcome.upstream_host or None,
            "path": path_for_log(ctx.request.path),
            "status": outcome.status,
            "error": outcome.error_code,
            "upstream_ms": round(outcome.upstream_seconds * 1000, 3),
            "overhead_ms": round(overhead * 1000, 3),
            "retries": outcome.retries,
            "bytes_in": ctx.request.content_length or 0,
            "bytes_out": outcome.bytes_out,
        },
    )
