"""The only HTTP client of the data plane: one pooled keep-alive client per process.

The client (`proxy.http.client`) adds nothing of its own to the wire but Host and body
framing: no User-Agent, Accept or Accept-Encoding, no decompression unless the caller
asked. Every address it connects to passes the outbound (SSRF) policy first, and every
client failure becomes one of the proxy's errors right here, at the edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_address

from credentials.outbound import OutboundBlocked, blocked_reason
from proxy import metrics
from proxy.errors import (
    InvalidUpstreamRequest,
    OutboundRefused,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.http.client import (
    ClientError,
    ClientLimits,
    ConnectError,
    HttpClient,
    RequestInvalid,
    Response,
    SystemResolver,
)
from proxy.settings import ProxySettings
from proxy.urls import wire_url

DNS_CACHE_SECONDS = 30.0
KEEPALIVE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | AsyncIterator[bytes] | None


class PolicyResolver:
    """The system resolver, refusing a host when any address it resolves to is blocked.

    Checked on every resolution, so a DNS name that later points at a private address is
    refused too; the client caches only answers that passed.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._system = SystemResolver()

    async def resolve(self, host: str, port: int) -> list[str]:
        addresses = await self._system.resolve(host, port)
        for address in addresses:
            reason = blocked_reason(ip_address(address), allow_private=self._allow_private)
            if reason is not None:
                raise OutboundBlocked(host, reason)
        return addresses


class Upstream:
    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._client: HttpClient | None = None

    async def start(self) -> None:
        settings = self._settings
        limits = ClientLimits(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            keepalive_timeout=KEEPALIVE_SECONDS,
            limit_per_host=settings.connections_per_host,
            dns_cache_seconds=DNS_CACHE_SECONDS,
        )
        resolver = PolicyResolver(allow_private=settings.allow_private_upstreams)
        self._client = HttpClient(limits, resolver=resolver)
        metrics.track_pool(self._client.stats)

    async def close(self) -> None:
        if self._client is not None:
            metrics.untrack_pool(self._client.stats)
            await self._client.close()
            self._client = None

    async def send(
        self, request: UpstreamRequest, *, deadline: float, decompress: bool
    ) -> Response:
        """Send one request; returns once the response head is in.

        `deadline` is in event-loop time; reaching it is an `UpstreamTimeout`.
        """
        assert self._client is not None, "Upstream.start() runs at start-up"
        try:
            return await self._client.request(
                request.method,
                wire_url(request.url),
                request.headers,
                request.body,
                deadline=deadline,
                decompress=decompress,
            )
        except Exception as failure:
            # Not a `with` block around the call: a context manager costs every request.
            error = translated(failure)
            if error is failure:
                raise
            raise error from failure


def translated(failure: Exception) -> Exception:
    """The proxy error for a client failure, most specific first; anything else as it is."""
    if isinstance(failure, ProxyError):
        return failure
    if isinstance(failure, OutboundBlocked):
        return OutboundRefused.blocked(failure.host, failure.reason)
    if isinstance(failure, TimeoutError):
        return UpstreamTimeout("The provider did not answer in time")
    if isinstance(failure, ConnectError):
        return UpstreamUnreachable(f"Could not connect to the provider: {failure.strerror}")
    if isinstance(failure, RequestInvalid):
        # The request cannot be put on the wire as built; that is the request's fault,
        # not the provider's.
        return InvalidUpstreamRequest(f"The upstream request is invalid: {failure}")
    if isinstance(failure, ClientError | OSError):
        return UpstreamUnreachable(
            f"The connection to the provider failed: {type(failure).__name__}"
        )
    return failure
