"""Request heads off the wire: httptools (llhttp) callbacks, head limits, framing checks.

llhttp refuses the smuggling shapes itself (Content-Length with Transfer-Encoding,
duplicate lengths, bare LF, obs-fold, bad tokens); this layer adds the size limits,
refuses what llhttp lets through but the server cannot honour (HTTP/0.9 and 2.0 request
lines, Transfer-Encoding in HTTP/1.0, codings other than plain chunked) and builds the
Request. Body bytes skip this layer: httptools calls the connection directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import httptools

from proxy.http.server_request import Headers, Request

if TYPE_CHECKING:
    from proxy.http.server_connection import HttpConnection
    from proxy.http.server_state import ServerLimits

_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}
_METHODS = {
    name.encode(): name
    for name in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT")
}

Refusal = tuple[int, str, str]  # status, error code, message


class Rejected(Exception):
    """Raised inside a parser callback to stop parsing; the refusal is on the parser."""


class RequestParser:
    """The callback object httptools drives; one per connection, reused per request."""

    __slots__ = (
        "_conn",
        "_content_length",
        "_expect",
        "_head_size",
        "_max_head_bytes",
        "_max_headers",
        "_max_request_line",
        "_raw_headers",
        "_transfer_encoding",
        "_url",
        "in_head",
        "messages",
        "on_body",
        "on_message_complete",
        "parser",
        "refusal",
        "remote",
    )

    def __init__(self, conn: HttpConnection, limits: ServerLimits) -> None:
        self._conn = conn
        self._max_request_line = limits.max_request_line
        self._max_head_bytes = limits.max_head_bytes
        self._max_headers = limits.max_headers
        # httptools looks its callbacks up once, here: body bytes go to the connection.
        self.on_body: Callable[[bytes], None] = conn.on_body
        self.on_message_complete: Callable[[], None] = conn.on_message_complete
        self.parser = httptools.HttpRequestParser(self)
        self.remote: str | None = None
        self.in_head = False
        self.messages = 0
        self.refusal: Refusal | None = None
        self._url = b""
        self._raw_headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._content_length: int | None = None
        self._transfer_encoding: bytes | None = None
        self._expect = False

    def on_message_begin(self) -> None:
        self.in_head = True
        self.messages += 1
        self._url = b""
        self._raw_headers = []
        self._head_size = 0
        self._content_length = None
        self._transfer_encoding = None
        self._expect = False

    def on_url(self, url: bytes) -> None:
        if self._url:  # the target arrived in several reads
            url = self._url + url
        self._url = url
        self._head_size = len(url)
        if len(url) > self._max_request_line:
            self._refuse(414, "uri_too_long", "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a chunked body's trailer: unused; the connection bounds its size
        headers = self._raw_headers
        size = self._head_size + len(name) + len(value) + 4
        if size > self._max_head_bytes or len(headers) >= self._max_headers:
            self._refuse(431, "headers_too_large", "request headers too large")
        self._head_size = size
        if value and (value[-1] == 32 or value[-1] == 9):
            value = value.rstrip(b" \t")
        length = len(name)
        if length == 14 or length == 17 or length == 6:
            self._note_framing(name.lower(), value)
        headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            self._refuse(400, "bad_request", "unsupported HTTP version")
        upgrade = parser.should_upgrade()
        coding = self._transfer_encoding
        length: int | None = None
        if upgrade:
            # Bodyless: what follows the head belongs to the new protocol (or, if the
            # handler does not switch, is dropped with the connection after the answer).
            body_exists = False
        elif coding is not None:
            if version == (1, 0):
                self._refuse(400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request")
            if coding.lower() != b"chunked":
                self._refuse_coding(coding)
            body_exists = True
        else:
            length = self._content_length
            body_exists = length is not None and length > 0
        method = parser.get_method()
        conn = self._conn
        conn.head_complete(
            Request(
                conn,
                _METHODS.get(method) or method.decode("ascii"),
                self._url.decode("latin-1"),
                version,
                Headers(self._raw_headers),
                self.remote,
                length,
                body_exists,
                parser.should_keep_alive() and not upgrade,
                self._expect and body_exists and version == (1, 1),
                # llhttp flags CONNECT as an upgrade too; only `Upgrade` + `Connection:
                # upgrade` asks to switch protocols.
                upgrade and method != b"CONNECT",
            )
        )

    def _note_framing(self, lower: bytes, value: bytes) -> None:
        if lower == b"content-length":
            self._content_length = int(value)  # llhttp accepts digits only, once
        elif lower == b"transfer-encoding":
            self._transfer_encoding = value
        elif lower == b"expect":
            self._expect = value.lower() == b"100-continue"

    def _refuse_coding(self, coding: bytes) -> NoReturn:
        if coding.rsplit(b",", 1)[-1].strip().lower() != b"chunked":
            # RFC 9112 6.3: without chunked last, the body length cannot be known.
            self._refuse(400, "bad_request", "Transfer-Encoding must end with chunked")
        self._refuse(501, "not_implemented", "unsupported Transfer-Encoding")

    def _refuse(self, status: int, code: str, message: str) -> NoReturn:
        self.refusal = (status, code, message)
        raise Rejected
