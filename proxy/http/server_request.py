"""The inbound side of one HTTP/1.1 exchange: request headers and a flow-controlled body.

The connection (server_connection.py) fills a Request while it parses; the handler reads
it. Body bytes wait in a per-request deque; taking them out tells the connection it may
read from the socket again.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:
    from asyncio import Future
    from collections import deque

    from proxy.http.server_connection import HttpConnection

_T = TypeVar("_T")
_ANY = sys.maxsize


class BodyIncomplete(Exception):
    """The request body ended early: the caller went away or sent broken framing."""


class BodyTooLarge(Exception):
    """The request body is longer than the reader's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class Headers(Mapping[str, str]):
    """Request headers in arrival order; lookups are case-insensitive and first-wins.

    The lower-cased index is built on the first lookup only: many requests are answered
    after four or five get() calls, and some after none.
    """

    __slots__ = ("_index", "_raw")

    def __init__(self, raw: list[tuple[str, str]]) -> None:
        self._raw = raw
        self._index: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._raw:
                index.setdefault(name.lower(), value)
            self._index = index
        return index

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str) -> str: ...
    @overload
    def get(self, name: str, /, default: _T) -> str | _T: ...
    def get(self, name: str, /, default: object = None) -> object:
        """The first value of a header (any case), or default."""
        return self._lookup().get(name.lower(), default)

    def getall(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._raw if key.lower() == wanted]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """The headers as received (names as sent). Shared, not copied: do not mutate."""
        return self._raw

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __getitem__(self, name: str) -> str:
        return self._lookup()[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup())

    def __len__(self) -> int:
        return len(self._lookup())

    def __repr__(self) -> str:
        # Values may be credentials: show only which headers arrived.
        return f"<Headers {[name for name, _ in self._raw]!r}>"


class Request:
    """One parsed request. The body is read with exactly one of the three readers,
    though mixing them (a read_exactly prefix, then iter_chunks) also works."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_conn",
        "_discard_left",
        "_discarding",
        "_expect_continue",
        "_failed",
        "_received",
        "_touched",
        "_waiter",
        "body_exists",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "raw_path",
        "remote",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        raw_path: str,
        version: tuple[int, int],
        headers: Headers,
        remote: str | None,
        content_length: int | None,
        body_exists: bool,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.headers = headers
        self.remote = remote
        self.content_length = content_length
        self.body_exists = body_exists
        self.keep_alive = keep_alive
        # The caller asked to switch protocols (`Upgrade` with `Connection: upgrade`):
        # the handler may answer with `Reply.switch_protocols` and tunnel the connection.
        self.upgrade = upgrade
        self._conn = conn
        self._expect_continue = expect_continue
        self._chunks: deque[bytes] | None = None
        self._complete = False
        self._failed = False
        self._received = 0
        self._touched = False
        self._discarding = False
        self._discard_left = 0
        self._waiter: Future[None] | None = None

    def __repr__(self) -> str:
        # The target may carry credentials in its query: keep it out of reprs and logs.
        return f"<Request {self.method} HTTP/{self.version[0]}.{self.version[1]}>"

    # --- readers ------------------------------------------------------------------------

    async def read_exactly(self, n: int) -> bytes:
        """Exactly n body bytes; BodyIncomplete if the body or the caller ends first."""
        self._begin_reading()
        parts: list[bytes] = []
        missing = n
        while missing > 0:
            chunk = await self._next_chunk(missing)
            if chunk is None:
                raise BodyIncomplete("request body ended early")
            parts.append(chunk)
            missing -= len(chunk)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def read_all(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge as soon as it is known to exceed limit bytes."""
        declared = self.content_length
        if declared is not None and declared > limit:
            # Refused before reading, so no 100 Continue invites the caller to send it.
            raise BodyTooLarge(limit)
        self._begin_reading()
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = await self._next_chunk(_ANY)
            if chunk is None:
                break
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(limit)
            parts.append(chunk)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, de-chunked; the socket is read only as fast as this
        iterator is consumed."""
        self._begin_reading()
        while True:
            chunk = await self._next_chunk(_ANY)
            if chunk is None:
                return
            yield chunk

    # --- plumbing -----------------------------------------------------------------------

    def _begin_reading(self) -> None:
        if self._discarding:
            raise BodyIncomplete("the response is finished; the body was discarded")
        self._touched = True
        if self._expect_continue:
            self._expect_continue = False
            if not self._complete and self._received == 0:
                self._conn.send_continue()

    async def _next_chunk(self, most: int) -> bytes | None:
        """The next buffered bytes (at most `most`), waiting for some; None at the end."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                if len(chunk) > most:
                    chunks.appendleft(chunk[most:])
                    chunk = chunk[:most]
                self._conn.body_consumed(len(chunk))
                return chunk
            if self._complete:
                return None
            if self._failed or self._discarding:
                raise BodyIncomplete("request body ended early")
            waiter = self._conn.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop_buffered(self) -> int:
        """Forget unread buffered chunks; returns how many bytes they held."""
        chunks = self._chunks
        if not chunks:
            return 0
        dropped = sum(map(len, chunks))
        chunks.clear()
        return dropped
