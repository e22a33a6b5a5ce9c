"""One upstream HTTP/1.1 connection: an asyncio Protocol driving an httptools parser.

The parser calls straight into this object, which fills the current Response. Waiting
is one future at a time (``wait``), woken by whatever might change the waiter's mind:
the final head, body bytes, the end of the body, loss of the connection, or the
transport accepting writes again. A single timer per wait enforces read_timeout as a
silence limit (re-armed when bytes arrived meanwhile) and the request deadline.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from proxy.http.client_config import ClientLimits
from proxy.http.client_errors import ConnectionDropped, ResponseInvalid

if TYPE_CHECKING:
    from proxy.http.client_pool import HostPool
    from proxy.http.client_response import Response

_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}
_NO_BODY_STATUSES = (204, 304)
# llhttp counts neither the status line's fixed part nor the separators; this does,
# roughly: "HTTP/1.1 200 " + CRLF, and ": " + CRLF per header line.
_STATUS_LINE_OVERHEAD = 15
_HEADER_LINE_OVERHEAD = 4


class Connection(asyncio.Protocol):
    __slots__ = (
        "_armed_at",
        "_deadline",
        "_head_rx",
        "_head_size",
        "_high_water",
        "_is_head",
        "_keep_alive",
        "_last_rx",
        "_loop",
        "_lost_waiter",
        "_low_water",
        "_max_head",
        "_parser",
        "_parser_spent",
        "_raw_headers",
        "_read_timeout",
        "_reason",
        "_response",
        "_timer",
        "_violation",
        "_waiter",
        "clean",
        "head_done",
        "idle_since",
        "lost",
        "pool",
        "pool_state",
        "reading_paused",
        "request_sent",
        "reused",
        "rx",
        "transport",
        "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: HostPool, limits: ClientLimits):
        self._loop = loop
        self.pool = pool
        self.pool_state = 0  # HostPool's bookkeeping
        self._read_timeout = limits.read_timeout
        self._high_water = limits.high_water
        self._low_water = limits.high_water // 4
        self._max_head = limits.max_head_bytes
        self.transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self._parser_spent = False
        self._response: Response | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._deadline: float | None = None
        self._last_rx = 0.0
        self._lost_waiter: asyncio.Future[None] | None = None
        self._violation: ResponseInvalid | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_size = 0
        self._head_rx = 0
        self._keep_alive = False
        self._is_head = False
        self.rx = 0
        """Bytes received since the current request started."""
        self.head_done = False
        """The final (non-1xx) head of the current response is in."""
        self.request_sent = False
        self.clean = True
        """Nothing odd happened that forbids reuse (early answer, stray bytes, ...)."""
        self.lost = False
        self.reused = False
        self.idle_since = 0.0
        self.write_paused = False
        self.reading_paused = False

    # -- request side ------------------------------------------------------------------

    def start(self, response: Response, is_head: bool) -> None:
        """Begin a request/response exchange on this (idle or fresh) connection."""
        self._response = response
        self._is_head = is_head
        self.rx = 0
        self.head_done = False
        self.request_sent = False
        self._keep_alive = False
        self._raw_headers = []
        self._reason = b""
        self._head_size = _STATUS_LINE_OVERHEAD
        self._head_rx = 0
        if self._parser_spent:
            self._parser = HttpResponseParser(self)
            self._parser_spent = False

    @property
    def writable(self) -> bool:
        transport = self.transport
        return not self.lost and transport is not None and not transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.writable:
            raise ConnectionDropped("the connection closed before the request was sent")
        assert self.transport is not None
        self.transport.write(data)

    def write_chunk(self, size_line: bytes, chunk: bytes) -> None:
        if not self.writable:
            raise ConnectionDropped("the connection closed during the request body")
        assert self.transport is not None
        self.transport.writelines((size_line, chunk, b"\r\n"))

    async def wait(self, deadline: float | None) -> None:
        """Until the next event, TimeoutError after read_timeout of silence or at deadline."""
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        now = self._armed_at = loop.time()
        self._deadline = deadline
        when = now + self._read_timeout
        if deadline is not None and deadline < when:
            when = deadline
        self._timer = loop.call_at(when, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _on_timer(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        now = self._loop.time()
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            waiter.set_exception(TimeoutError("the request deadline passed"))
            return
        expires = max(self._last_rx, self._armed_at) + self._read_timeout
        if now >= expires:
            waiter.set_exception(TimeoutError(f"upstream silent for {self._read_timeout:g}s"))
            return
        if deadline is not None and deadline < expires:
            expires = deadline
        self._timer = self._loop.call_at(expires, self._on_timer)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resume_below(self, buffered: int) -> None:
        """The consumer took body bytes; read again once few enough are buffered."""
        if buffered < self._low_water and self.reading_paused:
            self.reading_paused = False
            if self.writable:
                assert self.transport is not None
                self.transport.resume_reading()

    # -- end of an exchange ------------------------------------------------------------

    def finish(self, body_complete: bool) -> None:
        """The response is released: back to the pool if nothing forbids it, else closed.

        An answer that came before the whole request was sent (request_sent False, or
        bytes still in the transport) forbids it: the server's view of the stream is
        unknown."""
        self._response = None
        transport = self.transport
        if (
            body_complete
            and self._keep_alive
            and self.clean
            and self.request_sent
            and self.writable
            and transport is not None
            and transport.get_write_buffer_size() == 0
        ):
            if self.reading_paused:
                self.reading_paused = False
                transport.resume_reading()
            self.reused = True
            self.pool.checkin(self)
        else:
            self.clean = False
            self.pool.drop(self, abort=not body_complete)

    def close_transport(self, abort: bool) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()

    def closed_future(self) -> asyncio.Future[None]:
        """Resolved once the transport is gone (for an orderly client shutdown)."""
        waiter = self._lost_waiter
        if waiter is None:
            waiter = self._lost_waiter = self._loop.create_future()
            if self.lost or self.transport is None:
                waiter.set_result(None)
        return waiter

    def _fail(self, error: ResponseInvalid) -> None:
        response = self._response
        if response is not None and not response.complete and response._error is None:
            response._error = error
        self.clean = False
        self.close_transport(abort=True)
        self._wake()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        self._last_rx = self._loop.time()
        if self._response is None:
            # Bytes nobody asked for (idle in the pool, or after the response was
            # released): the stream can no longer be trusted.
            self.clean = False
            self.close_transport(abort=True)
            return
        head_pending = not self.head_done
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            self._fail(self._violation or ResponseInvalid("malformed response from upstream"))
            return
        if head_pending and not self.head_done:
            self._head_rx += len(data)
            if self._head_rx > self._max_head:
                self._fail(ResponseInvalid("response head too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self._response
        if response is not None and not response.complete and response._error is None:
            if exc is None and self.head_done and self._ends_at_eof():
                response.complete = True  # close-delimited body: EOF is its end
            elif self.head_done:
                response._error = ConnectionDropped("upstream closed the connection mid-body")
            else:
                response._error = ConnectionDropped("upstream closed the connection")
        self._wake()
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        self.pool.lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    def _ends_at_eof(self) -> bool:
        if self._is_head:
            return False
        for name, value in self._raw_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:
            self.clean = False  # a second response to one request

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Trailer fields of a chunked body arrive here too, after the head: they count
        # against the same size limit and are otherwise dropped.
        self._head_size += len(name) + len(value) + _HEADER_LINE_OVERHEAD
        if self._head_size > self._max_head:
            self._violation = ResponseInvalid("response head too large")
            raise self._violation
        if not self.head_done:
            self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                self._violation = ResponseInvalid("upstream switched protocols (101)")
                raise self._violation
            self._raw_headers = []  # interim (100 Continue, 103 Early Hints): skipped
            self._reason = b""
            return
        response = self._response
        if response is None or self.head_done:
            self.clean = False
            return
        self.head_done = True
        response.status = status
        response.reason = self._reason.decode("latin-1")
        version = parser.get_http_version()
        response.version = _VERSIONS.get(version) or _parse_version(version)
        response.raw_headers = self._raw_headers
        response._head_received()
        if self._is_head or status in _NO_BODY_STATUSES:
            # No body whatever the headers say; llhttp cannot be told so for HEAD, so
            # that parser is replaced before the next request.
            response.complete = True
            self._keep_alive = parser.should_keep_alive()
            self._parser_spent = self._is_head
        self._wake()

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is None or response.complete:
            self.clean = False  # body bytes where none may be
            return
        response._buffer.append(body)
        buffered = response._buffered = response._buffered + len(body)
        if buffered > self._high_water and not self.reading_paused and self.writable:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        response = self._response
        if not self.head_done or response is None or response.complete:
            return  # an interim response ended, or this one already counted as done
        response.complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()


def _parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)
