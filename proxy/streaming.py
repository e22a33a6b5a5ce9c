"""Copy the provider's response back to the caller as it arrives.

Status, headers (minus hop-by-hop) and body bytes pass through unchanged; memory stays
bounded by one chunk per stream. Once the status line is sent an upstream failure can
no longer become an error response: the caller's connection is aborted instead, so a
truncated body is never mistaken for a complete one.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web

from proxy import compat, metrics
from proxy.context import ProxyContext
from proxy.headers import response_headers

log = logging.getLogger("authgate.proxy")


async def stream_back(
    ctx: ProxyContext, upstream: aiohttp.ClientResponse, *, decompressed: bool
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in _headers(upstream, decompressed=decompressed):
        response.headers.add(name, value)
    for name, value in ctx.response_header_overrides:
        response.headers[name] = value
    response.headers[compat.REQUEST_ID_HEADER] = ctx.request_id
    ctx.outcome.status = upstream.status
    await response.prepare(ctx.request)
    ctx.outcome.responded_at = time.perf_counter()
    try:
        async for chunk in upstream.content.iter_any():
            ctx.outcome.bytes_out += len(chunk)
            with metrics.bytes_in_flight(len(chunk)):
                await response.write(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError) as failure:
        _abort(ctx, failure)
        return response
    finally:
        upstream.release()
    await response.write_eof()
    return response


def _headers(upstream: aiohttp.ClientResponse, *, decompressed: bool) -> list[tuple[str, str]]:
    raw = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in upstream.raw_headers
    ]
    decoded = decompressed and "Content-Encoding" in upstream.headers
    return response_headers(raw, decoded=decoded)


def _abort(ctx: ProxyContext, failure: BaseException) -> None:
    ctx.outcome.error_code = "stream_aborted"
    log.warning(
        "stream failed after the status was sent; aborting the caller connection",
        extra={"request_id": ctx.request_id, "failure": type(failure).__name__},
    )
    transport = ctx.request.transport
    if transport is not None:
        transport.abort()
