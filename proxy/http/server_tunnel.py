"""A connection after `101 Switching Protocols`: raw bytes both ways, flow-controlled.

The server knows nothing of the new protocol. Bytes the caller sends after an upgrade
request's head are held here (reading pauses past the connection's high-water mark)
until the handler switches protocols and reads them; if it answers anything else, they
are dropped with the connection, which closes after that answer.

The tunnel lives as long as the handler that switched: when the handler returns, the
connection closes (after pending writes); when the server closes, it is aborted.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from proxy.http.server_reply import ClientDisconnected

if TYPE_CHECKING:
    from asyncio import Future

    from proxy.http.server_connection import HttpConnection


class Tunnel:
    __slots__ = ("_chunks", "_conn", "_ended", "_waiter")

    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._waiter: Future[None] | None = None

    # --- the connection's side ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def end(self) -> None:
        """The caller's side is gone: readers get what is buffered, then b""."""
        self._ended = True
        self._wake()

    # --- the handler's side -------------------------------------------------------------

    async def read(self) -> bytes:
        """The next bytes from the caller, as they arrived; b"" once it has closed."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._conn.body_consumed(len(chunk))
                return chunk
            if self._ended:
                return b""
            waiter = self._conn.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    async def write(self, data: bytes) -> None:
        """Send bytes to the caller, waiting while its socket is backed up."""
        conn = self._conn
        if conn.closed:
            raise ClientDisconnected("client disconnected")
        if not data:
            return
        conn.transport.write(data)
        if conn.write_paused:
            await conn.wait_writable()
            if conn.closed:
                raise ClientDisconnected("client disconnected")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
