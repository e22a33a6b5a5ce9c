"""Copy the provider's response back to the caller as it arrives.

Status, headers (minus hop-by-hop) and body bytes pass through unchanged; memory stays
bounded by one chunk per stream. Once the status line is sent an upstream failure can
no longer become an error response: the caller's connection is aborted instead, so a
truncated body is never mistaken for a complete one.
"""

from __future__ import annotations

import logging
import time

from proxy import compat, metrics
from proxy.context import ProxyContext
from proxy.headers import Header, response_headers
from proxy.http.client import ClientError, Response
from proxy.http.server import ClientDisconnected

log = logging.getLogger("authgate.proxy")


async def stream_back(ctx: ProxyContext, upstream: Response) -> None:
    reply = ctx.reply
    ctx.outcome.status = upstream.status
    try:
        reply.start(upstream.status, _headers(ctx, upstream), upstream.reason)
        ctx.outcome.responded_at = time.perf_counter()
        async for chunk in upstream.iter_chunks():
            size = len(chunk)
            ctx.outcome.bytes_out += size
            # No coroutine per chunk: wait only while the caller's socket is backed up.
            if reply.send(chunk):
                metrics.hold_bytes(size)
                try:
                    await reply.drain()
                finally:
                    metrics.release_bytes(size)
    except ClientDisconnected:
        ctx.outcome.error_code = "client_disconnected"
        upstream.close()
        return
    except (ClientError, OSError, TimeoutError) as failure:
        upstream.close()
        _abort(ctx, failure)
        return
    upstream.release()
    reply.finish()


def _headers(ctx: ProxyContext, upstream: Response) -> list[Header]:
    raw = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in upstream.raw_headers
    ]
    headers = response_headers(raw, decoded=upstream.decoded)
    if ctx.response_header_overrides:
        replaced = {name.lower() for name, _ in ctx.response_header_overrides}
        headers = [header for header in headers if header[0].lower() not in replaced]
        headers.extend(ctx.response_header_overrides)
    headers.append((compat.REQUEST_ID_HEADER, ctx.request_id))
    return headers


def _abort(ctx: ProxyContext, failure: BaseException) -> None:
    ctx.outcome.error_code = "stream_aborted"
    log.warning(
        "stream failed after the status was sent; aborting the caller connection",
        extra={"request_id": ctx.request_id, "failure": type(failure).__name__},
    )
    ctx.reply.abort()
