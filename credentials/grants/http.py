"""The one HTTP client for token endpoints.

A token request carries client secrets and refresh tokens, so the client is strict:

* every URL passes the outbound (SSRF) policy, IP literals by `check_url` and host names
  by the guarded resolver, which pins the checked addresses;
* redirects are never followed (a token endpoint that redirects is misconfigured, and
  following it would resend secrets to wherever it points); the 3xx reaches the caller;
* no cookies are kept: one session serves every tenant;
* response bodies are capped, since a token response is small;
* every client-library failure becomes a `GrantError` here, at the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from credentials.grants.base import GrantError
from credentials.outbound import OutboundBlocked, check_url, guarded_session

MAX_RESPONSE_BYTES: Final = 1024 * 1024
_CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class TokenCall:
    """One request to a token endpoint, fully built (body already encoded)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TokenReply:
    """What the endpoint answered: status, headers and the whole (capped) body."""

    status: int
    headers: CIMultiDictProxy[str] = field(repr=False)
    body: bytes = field(repr=False)


class TokenHttp:
    """Pooled client for token endpoints; create once, `close()` at shutdown.

    The aiohttp session is created on first use, inside the running loop.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        connect_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.allow_private = allow_private
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, call: TokenCall) -> TokenReply:
        """Send `call` and read the whole response, within the total timeout.

        Raises GrantError: `misconfigured` (refused by the outbound policy, or a URL
        aiohttp cannot send), `timeout` or `network`. Any HTTP status is returned.
        """
        with translate_errors():
            if _has_dot_segment(call.url):
                raise GrantError("misconfigured", "the token URL has a '.' or '..' path segment")
            # Parsed once: the URL the policy checks is the very object aiohttp sends to.
            url = URL(call.url)
            check_url(url, allow_private=self.allow_private)
            async with asyncio.timeout(self._total_timeout):
                return await self._exchange(call, url)

    async def _exchange(self, call: TokenCall, url: URL) -> TokenReply:
        async with self._client().request(
            call.method,
            url,
            headers=call.headers,
            data=call.body,
            allow_redirects=False,
        ) as response:
            body = await self._read_capped(response)
            return TokenReply(
                response.status, CIMultiDictProxy(CIMultiDict(response.headers)), body
            )

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise GrantError(
                    "bad_response",
                    f"token response larger than {self._max_response_bytes} bytes",
                    status=response.status,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(
                allow_private=self.allow_private, connect_timeout=self._connect_timeout
            )
        return self._session


def _has_dot_segment(url: str) -> bool:
    """URL parsing resolves `.`/`..` segments (even spelled %2E): a value interpolated into
    a path must not be able to climb out of it."""
    raw_path = URL(url, encoded=True).raw_path
    return any(unquote(segment) in {".", ".."} for segment in raw_path.split("/"))


@contextmanager
def translate_errors() -> Iterator[None]:
    """Client-library failures as GrantErrors, most specific first.

    Messages name the failure's kind, never the URL (its query may carry parameters).
    """
    try:
        yield
    except GrantError:
        raise
    except OutboundBlocked as blocked:
        raise _refused(blocked) from None
    except aiohttp.InvalidURL:
        raise GrantError("misconfigured", "the token endpoint URL is invalid") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise GrantError("timeout", "the token endpoint did not answer in time") from None
    except aiohttp.ClientConnectorError as failure:
        cause = _blocked_cause(failure)
        if cause is not None:
            raise _refused(cause) from None
        raise GrantError(
            "network", f"could not connect to the token endpoint: {type(failure).__name__}"
        ) from None
    except (aiohttp.ClientError, OSError) as failure:
        raise GrantError("network", f"the token request failed: {type(failure).__name__}") from None
    except ValueError:
        # aiohttp refuses what it cannot put on the wire (a malformed URL or header).
        raise GrantError("misconfigured", "the token request cannot be sent as built") from None


def _refused(blocked: OutboundBlocked) -> GrantError:
    return GrantError(
        "misconfigured", f"token endpoint refused by the outbound policy: {blocked.reason}"
    )


def _blocked_cause(error: BaseException) -> OutboundBlocked | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OutboundBlocked):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
