"""The response handed back by the client: head fields, and the body as it arrives.

The connection (:mod:`proxy.http.client_connection`) fills a Response's underscored
fields from its parser callbacks; the two are written as one unit. Body chunks wait in
a deque; reading them takes no future while any are buffered, which is the common case
for small responses that arrive with their head.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from proxy.http.client_decode import BodyDecoder, decoder_for
from proxy.http.client_errors import ConnectionDropped, ResponseInvalid
from proxy.http.client_headers import ResponseHeaders

if TYPE_CHECKING:
    from proxy.http.client_connection import Connection

_CONTENT_ENCODING = b"content-encoding"


class Response:
    __slots__ = (
        "_buffer",
        "_buffered",
        "_conn",
        "_decoder",
        "_decompress",
        "_error",
        "_headers",
        "complete",
        "decoded",
        "raw_headers",
        "reason",
        "status",
        "version",
    )

    def __init__(self, conn: Connection, decompress: bool) -> None:
        self.status = 0
        self.reason = ""
        self.version = (1, 1)
        self.raw_headers: list[tuple[bytes, bytes]] = []
        """As received: order and spelling kept."""
        self.decoded = False
        """The body is being gzip/deflate-decoded (asked for, and an encoding we know)."""
        self.complete = False
        """The whole body has been received (not necessarily read)."""
        self._headers: ResponseHeaders | None = None
        self._conn: Connection | None = conn
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._decompress = decompress
        self._decoder: BodyDecoder | None = None

    @property
    def headers(self) -> ResponseHeaders:
        headers = self._headers
        if headers is None:
            headers = self._headers = ResponseHeaders(self.raw_headers)
        return headers

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (decoded when ``decoded``); never an empty chunk.

        Reaching the end releases the connection to the pool. Raises ConnectionDropped
        if the peer goes away mid-body and TimeoutError after read_timeout of silence.
        """
        buffer = self._buffer
        decoder = self._decoder  # chosen with the head, before this can be called
        while True:
            if buffer:
                chunk = buffer.popleft()
                self._took(len(chunk))
                if decoder is None:
                    yield chunk
                    continue
                try:
                    for piece in decoder.feed(chunk):
                        yield piece
                except ResponseInvalid:
                    self.close()
                    raise
            elif self.complete:
                break
            else:
                await self._wait_for_body()
        if decoder is not None:
            try:
                tail = decoder.flush()
            except ResponseInvalid:
                self.close()
                raise
            if tail:
                yield tail
        self.release()

    async def read(self) -> bytes:
        """The whole body; for tests and small bodies."""
        return b"".join([chunk async for chunk in self.iter_chunks()])

    def release(self) -> None:
        """Done with this response: a reusable connection goes back to the pool, any
        other is closed. Idempotent; chunks already buffered stay readable."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish(self.complete)

    def close(self) -> None:
        """Close the connection, whatever its state. Idempotent."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            if not self.complete and self._error is None:
                self._error = ConnectionDropped("the response was closed before its end")
            conn.finish(False)

    def __repr__(self) -> str:
        return f"<Response {self.status} complete={self.complete}>"

    # -- shared with the connection -------------------------------------------------

    def _head_received(self) -> None:
        if self._decompress:
            self._decoder = self._pick_decoder()
            self.decoded = self._decoder is not None

    def _pick_decoder(self) -> BodyDecoder | None:
        found: bytes | None = None
        for name, value in self.raw_headers:
            if len(name) == 16 and name.lower() == _CONTENT_ENCODING:
                if found is not None:
                    return None  # layered encodings are passed through untouched
                found = value
        return None if found is None else decoder_for(found)

    def _took(self, size: int) -> None:
        self._buffered -= size
        conn = self._conn
        if conn is not None and conn.reading_paused:
            conn.resume_below(self._buffered)

    async def _wait_for_body(self) -> None:
        error = self._error
        if error is not None:
            self.close()
            raise error
        conn = self._conn
        if conn is None:
            raise ConnectionDropped("the response was closed before its end")
        try:
            await conn.wait(None)
        except BaseException:
            self.close()
            raise
