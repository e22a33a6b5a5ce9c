"""The HTTP client that posts webhooks, under the outbound (SSRF) policy.

A webhook URL is chosen by a tenant, so the client is as strict as the token client:
the URL's IP literal is checked before the request and host names by the guarded
resolver (which pins the addresses it checked); redirects are never followed (a 3xx is
the receiver's answer, not an instruction); no cookies are kept; and the response body
is never read. Every failure becomes an `Attempt` here, at the edge, described by its
kind only: the URL (whose query or path may carry a token) never enters a message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp
from yarl import URL

from credentials.outbound import OutboundBlocked, check_url, guarded_session


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one POST went: the receiver's status when it answered, else why not.

    `retryable` is set for failures without an answer that may pass (network, timeout);
    `retry_after` is the receiver's Retry-After, in seconds, when it sent one.
    """

    status: int | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else self.error or "unknown"


def origin(url: str) -> str:
    """What may be logged of a webhook URL: scheme, host and port. Paths are left out
    too: some receivers (chat webhooks, for one) carry their secret in the path."""
    try:
        parsed = URL(url, encoded=True)
        return str(parsed.origin())
    except ValueError:
        return "(invalid URL)"


class WebhookHttp:
    """Pooled client for webhook deliveries; create once, `close()` at shutdown."""

    def __init__(
        self, *, allow_private: bool, timeout: float = 20.0, connect_timeout: float = 10.0
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Attempt:
        try:
            target = URL(url)
            check_url(target, allow_private=self.allow_private)
            async with asyncio.timeout(self.timeout):
                return await self._exchange(target, body, headers)
        except OutboundBlocked as blocked:
            return _refused(blocked)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return Attempt(error="timeout", retryable=True)
        except aiohttp.ClientConnectorError as failure:
            cause = _blocked_cause(failure)
            if cause is not None:
                return _refused(cause)
            return Attempt(error=f"network: {type(failure).__name__}", retryable=True)
        except aiohttp.InvalidURL:
            return Attempt(error="invalid URL")
        except (aiohttp.ClientError, OSError) as failure:
            return Attempt(error=f"network: {type(failure).__name__}", retryable=True)
        except ValueError:
            # yarl or aiohttp refusing what cannot be put on the wire.
            return Attempt(error="invalid URL")

    async def _exchange(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Attempt:
        async with self._client().post(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            return Attempt(
                status=response.status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(
                allow_private=self.allow_private, connect_timeout=self._connect_timeout
            )
        return self._session


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def _refused(blocked: OutboundBlocked) -> Attempt:
    return Attempt(error=f"refused by the outbound policy: {blocked.reason}")


def _blocked_cause(error: BaseException) -> OutboundBlocked | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OutboundBlocked):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
