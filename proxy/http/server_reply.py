"""The outbound side of one HTTP/1.1 exchange: the status line, headers and framed body.

The server owns framing: the caller's Transfer-Encoding, Connection and Keep-Alive
headers are dropped, and Content-Length is the only length the caller may declare. The
head is held back until the first body write so a small response leaves in one send.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

from proxy.http.tokens import TOKEN

if TYPE_CHECKING:
    from asyncio import Task

    from proxy.http.server_connection import HttpConnection
    from proxy.http.server_request import Request
    from proxy.http.server_tunnel import Tunnel


class ClientDisconnected(ConnectionResetError):
    """The caller's connection is gone; nothing more can be sent to it."""


# Bodies up to this size are copied next to their framing (one buffer, one send);
# larger ones go out as a vectored write so the payload itself is not copied.
_COPY_LIMIT = 16 * 1024

# What start() does with a header, by exact name as given (cached after first sight).
_PLAIN, _LENGTH, _DATE, _DROPPED = 0, 1, 2, 3
_KIND_BY_LOWER = {
    "content-length": _LENGTH,
    "date": _DATE,
    "transfer-encoding": _DROPPED,
    "connection": _DROPPED,
    "keep-alive": _DROPPED,
}
_name_kinds: dict[str, int] = {}
_NAME_CACHE_SIZE = 4096


def _kind_of(name: str) -> int:
    kind = _name_kinds.get(name)
    if kind is None:
        if TOKEN.fullmatch(name) is None:
            raise ValueError("invalid response header name")
        kind = _KIND_BY_LOWER.get(name.lower(), _PLAIN)
        if len(_name_kinds) < _NAME_CACHE_SIZE:
            _name_kinds[name] = kind
    return kind


def _status_line(status: int, reason: str | None) -> str:
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = "Unknown"
    if not 100 <= status <= 999:
        raise ValueError("status must be a three-digit number")
    return f"HTTP/1.1 {status} {reason}\r\n"


_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}


class _DateLine:
    """The `Date` header line, formatted at most once per second."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = ""

    def current(self) -> str:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.line = f"Date: {formatdate(now, usegmt=True)}\r\n"
        return self.line


_date = _DateLine()


def _scan(headers: Sequence[tuple[str, str]], lines: list[str]) -> tuple[int | None, bool]:
    """Append the caller's headers to lines; returns (declared Content-Length, has Date)."""
    declared: int | None = None
    has_date = False
    for name, value in headers:
        kind = _kind_of(name)
        if kind == _PLAIN:
            lines.append(f"{name}: {value}\r\n")
        elif kind == _LENGTH:
            if declared is not None:
                raise ValueError("more than one Content-Length")
            declared = _parse_length(value)
        elif kind == _DATE:
            has_date = True
            lines.append(f"{name}: {value}\r\n")
    return declared, has_date


def _parse_length(value: str) -> int:
    text = value.strip(" \t")
    if not (text.isascii() and text.isdigit()):
        raise ValueError("Content-Length must be a non-negative integer")
    return int(text)


def _encode(lines: list[str]) -> bytes:
    """Join and encode a head, refusing CR, LF or NUL anywhere but the line ends."""
    text = "".join(lines)
    expected = len(lines)
    if text.count("\n") != expected or text.count("\r") != expected or "\x00" in text:
        raise ValueError("response header contains CR, LF or NUL")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("response header is not latin-1") from None


def error_response(status: int, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    """A complete server-level error response that closes the connection."""
    lines = [_status_line(status, None)]
    _, has_date = _scan(headers, lines)
    lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("Connection: close\r\n")
    if not has_date:
        lines.append(_date.current())
    lines.append("\r\n")
    return _encode(lines) + body


class Reply:
    """The response to one request. start() then write()* then finish(), or respond()."""

    __slots__ = (
        "_chunked",
        "_close",
        "_conn",
        "_declared",
        "_finished",
        "_head",
        "_request",
        "_sends_body",
        "_written",
        "disconnected",
        "started",
    )

    def __init__(self, conn: HttpConnection, request: Request) -> None:
        self._conn = conn
        self._request = request
        self.started = False
        self.disconnected = False
        self._finished = False
        self._head: bytes | None = None
        self._chunked = False
        self._close = False
        self._sends_body = True
        self._declared: int | None = None
        self._written = 0

    # --- head ---------------------------------------------------------------------------

    def _begin(
        self, status: int, headers: Sequence[tuple[str, str]], reason: str | None
    ) -> tuple[list[str], int | None, bool]:
        if self.started:
            raise RuntimeError("the response was already started")
        lines = [_status_line(status, reason)]
        declared, has_date = _scan(headers, lines)
        self._sends_body = (
            status >= 200 and status != 204 and status != 304 and self._request.method != "HEAD"
        )
        return lines, declared, has_date

    def _end_head(self, lines: list[str], has_date: bool) -> bytes:
        request = self._request
        close = self._close or self._conn.should_close_after(request)
        self._close = close
        if close:
            lines.append("Connection: close\r\n")
        elif request.version == (1, 0):
            lines.append("Connection: keep-alive\r\n")
        if not has_date:
            lines.append(_date.current())
        lines.append("\r\n")
        head = _encode(lines)
        self.started = True
        return head

    def start(
        self, status: int, headers: Sequence[tuple[str, str]], reason: str | None = None
    ) -> None:
        """Prepare the status line and headers; they are sent with the first body bytes."""
        lines, declared, has_date = self._begin(status, headers, reason)
        if declared is not None:
            # 1xx and 204 never carry a length; 304 and HEAD keep the representation's.
            if status >= 200 and status != 204:
                lines.append(f"Content-Length: {declared}\r\n")
                if self._sends_body:
                    self._declared = declared
        elif self._sends_body:
            if self._request.version >= (1, 1):
                lines.append("Transfer-Encoding: chunked\r\n")
                self._chunked = True
            else:
                # An HTTP/1.0 caller knows the body ended only when the connection does.
                self._close = True
        self._head = self._end_head(lines, has_date)

    def respond(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        reason: str | None = None,
    ) -> None:
        """A complete response with a known body, sent in one transport write."""
        lines, declared, has_date = self._begin(status, headers, reason)
        if status >= 200 and status != 204:
            # A 304, or a HEAD answer with no body in hand, keeps the length the caller
            # declared for the representation; everything else gets the body's length.
            if not (status == 304 or (not body and not self._sends_body)):
                declared = len(body)
            if declared is not None:
                lines.append(f"Content-Length: {declared}\r\n")
        head = self._end_head(lines, has_date)
        self._finished = True
        conn = self._conn
        if self.disconnected:
            return
        conn.transport.write(head + body if self._sends_body and body else head)
        conn.response_done(self)

    def switch_protocols(self, headers: Sequence[tuple[str, str]]) -> Tunnel:
        """Answer an upgrade request with `101 Switching Protocols` and hand back the
        connection's raw bytes. `headers` name the new protocol (`Upgrade`, ...); the
        server adds `Connection: Upgrade`. The connection closes when the handler returns
        (an upgrade request is the last one read on its connection).
        """
        tunnel = self._conn.tunnel
        if not self._request.upgrade or tunnel is None:
            raise RuntimeError("the request did not ask to switch protocols")
        lines, _, has_date = self._begin(101, headers, None)
        lines.append("Connection: Upgrade\r\n")
        if not has_date:
            lines.append(_date.current())
        lines.append("\r\n")
        head = _encode(lines)
        self.started = True
        if self.disconnected:
            raise ClientDisconnected("client disconnected")
        self._conn.transport.write(head)
        return tunnel

    # --- body ---------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send body bytes, waiting while the caller's socket is backed up."""
        if self.send(data):
            await self.drain()

    def send(self, data: bytes) -> bool:
        """`write` without the wait, for a caller that streams many chunks: True when
        the caller's socket is backed up and `drain()` must be awaited before the next."""
        if self.disconnected:
            raise ClientDisconnected("client disconnected")
        if not self.started or self._finished:
            raise RuntimeError("write() outside start() .. finish()")
        size = len(data)
        if not self._sends_body or size == 0:
            return False
        conn = self._conn
        head = self._head
        if self._chunked:
            prefix = b"%x\r\n" % size
            if head is not None:
                self._head = None
                prefix = head + prefix
            if size <= _COPY_LIMIT:
                conn.transport.write(b"".join((prefix, data, b"\r\n")))
            else:
                conn.transport.writelines((prefix, data, b"\r\n"))
        else:
            declared = self._declared
            if declared is not None and self._written + size > declared:
                raise ValueError("body longer than the declared Content-Length")
            self._written += size
            if head is None:
                conn.transport.write(data)
            else:
                self._head = None
                if size <= _COPY_LIMIT:
                    conn.transport.write(head + data)
                else:
                    conn.transport.writelines((head, data))
        return conn.write_paused

    async def drain(self) -> None:
        """Until the caller's socket takes more; ClientDisconnected if it went away."""
        conn = self._conn
        if conn.write_paused:
            await conn.wait_writable()
        if self.disconnected:
            raise ClientDisconnected("client disconnected")

    def finish(self) -> None:
        """End the response. A body shorter than its declared length aborts the
        connection, so a truncated body never looks complete."""
        if self._finished:
            return
        if not self.started:
            raise RuntimeError("finish() before start()")
        self._finished = True
        if self.disconnected:
            return
        conn = self._conn
        declared = self._declared
        if declared is not None and self._written < declared:
            self.abort()
            return
        tail = b"0\r\n\r\n" if self._chunked else b""
        head = self._head
        if head is not None:
            self._head = None
            tail = head + tail
        if tail:
            conn.transport.write(tail)
        conn.response_done(self)

    def abort(self) -> None:
        """Reset the caller's connection now."""
        self._finished = True
        if not self.disconnected:
            self.disconnected = True
            self._conn.abort()

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def closes_connection(self) -> bool:
        return self._close

    def _handler_done(self, task: Task[None]) -> None:
        self._conn.state.handler_done(self, task)
