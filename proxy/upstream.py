"""The only HTTP client of the data plane: one pooled keep-alive session per process.

It adds nothing of its own to the wire (no User-Agent, Accept or Accept-Encoding of its
own, no decompression unless the caller asked) and translates every client-library
failure into one of the proxy's errors right here, at the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp

from credentials.outbound import GuardedResolver, OutboundBlocked
from proxy import metrics
from proxy.errors import (
    InvalidUpstreamRequest,
    OutboundRefused,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.settings import ProxySettings
from proxy.urls import request_url

DNS_CACHE_SECONDS = 30
KEEPALIVE_SECONDS = 30.0
_SKIPPED_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | AsyncIterator[bytes] | None


class Upstream:
    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        settings = self._settings
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=settings.allow_private_upstreams),
            limit=0,
            ttl_dns_cache=DNS_CACHE_SECONDS,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        metrics.track_pool(connector)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=_SKIPPED_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
        )

    async def close(self) -> None:
        if self._session is not None:
            connector = self._session.connector
            await self._session.close()
            if isinstance(connector, aiohttp.TCPConnector):
                metrics.untrack_pool(connector)
            self._session = None

    async def send(
        self, request: UpstreamRequest, *, deadline: float, decompress: bool
    ) -> aiohttp.ClientResponse:
        """Send one request; returns once the response headers are in.

        `deadline` is in event-loop time; reaching it is an `UpstreamTimeout`.
        """
        assert self._session is not None, "Upstream.start() runs at application start-up"
        with translate_errors():
            async with asyncio.timeout_at(deadline):
                response = await self._session.request(
                    request.method,
                    request_url(request.url),
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                    auto_decompress=decompress,
                )
        metrics.refresh_pool_gauges()  # while this request holds its connection
        return response


@contextmanager
def translate_errors() -> Iterator[None]:
    """Map client-library failures to proxy errors, most specific first."""
    try:
        yield
    except ProxyError:
        raise
    except OutboundBlocked as blocked:
        raise OutboundRefused.blocked(blocked.host, blocked.reason) from blocked
    except (TimeoutError, aiohttp.ServerTimeoutError) as timeout:
        raise UpstreamTimeout("The provider did not answer in time") from timeout
    except aiohttp.ClientConnectorError as failure:
        cause = _blocked_cause(failure)
        if cause is not None:
            raise OutboundRefused.blocked(cause.host, cause.reason) from failure
        raise UpstreamUnreachable(
            f"Could not connect to the provider: {failure.strerror}"
        ) from failure
    except ValueError as invalid:
        # aiohttp refuses requests it cannot put on the wire (e.g. credentials in the URL
        # next to an Authorization header); that is the request's fault, not the provider's.
        raise InvalidUpstreamRequest(f"The upstream request is invalid: {invalid}") from invalid
    except (aiohttp.ClientError, OSError) as failure:
        raise UpstreamUnreachable(
            f"The connection to the provider failed: {type(failure).__name__}"
        ) from failure


def _blocked_cause(error: BaseException) -> OutboundBlocked | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OutboundBlocked):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
