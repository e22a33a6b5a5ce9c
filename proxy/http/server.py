"""The lean HTTP/1.1 server of the data plane: asyncio protocols and httptools (llhttp).

Pure transport: it parses requests, runs one handler task per request, frames responses
and enforces limits and timeouts. What a request means is the handler's business.

    async def handler(request: Request, reply: Reply) -> None:
        reply.respond(200, [("Content-Type", "text/plain")], b"hello")

    server = HttpServer(handler)
    await server.start("127.0.0.1", 0)

A handler may answer an upgrade request (`request.upgrade`) with
`reply.switch_protocols(headers)` and then move raw bytes through the returned Tunnel;
an upgraded connection counts as in flight (drain waits for it, close aborts it) until
its handler returns.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections.abc import Callable

from proxy.http.server_connection import HttpConnection
from proxy.http.server_reply import ClientDisconnected, Reply
from proxy.http.server_request import BodyIncomplete, BodyTooLarge, Headers, Request
from proxy.http.server_state import ErrorBody, Handler, ServerLimits, ServerState
from proxy.http.server_tunnel import Tunnel

__all__ = [
    "BodyIncomplete",
    "BodyTooLarge",
    "ClientDisconnected",
    "ErrorBody",
    "Handler",
    "Headers",
    "HttpServer",
    "Reply",
    "Request",
    "ServerLimits",
    "Tunnel",
    "json_error_body",
]

# close() waits this long for cancelled handlers to unwind (a handler may shield itself).
_CANCEL_WAIT = 5.0


def json_error_body(status: int, code: str, message: str) -> tuple[list[tuple[str, str]], bytes]:
    """The default rendering of server-level errors."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return [("Content-Type", "application/json")], body


class HttpServer:
    """Listens, accepts and serves; see the module docstring."""

    __slots__ = ("_error_body", "_factory", "_handler", "_limits", "_servers", "_state")

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits = ServerLimits(),  # noqa: B008 - frozen, shared safely
        *,
        error_body: ErrorBody | None = None,
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._error_body = error_body or json_error_body
        self._servers: list[asyncio.Server] = []
        self._state: ServerState | None = None
        self._factory: Callable[[], HttpConnection] | None = None

    def _connection_factory(self) -> Callable[[], HttpConnection]:
        factory = self._factory
        if factory is None:
            loop = asyncio.get_running_loop()
            state = self._state = ServerState(self._handler, self._limits, self._error_body, loop)
            factory = self._factory = functools.partial(HttpConnection, state)
        return factory

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024
    ) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._connection_factory(), host, port, reuse_port=reuse_port, backlog=backlog
        )
        self._servers.append(server)

    async def start_on_socket(self, sock: socket.socket) -> None:
        """Serve on an already-bound listening socket (several processes share one)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._connection_factory(), sock=sock, backlog=1024)
        self._servers.append(server)

    @property
    def port(self) -> int:
        for server in self._servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not listening")

    @property
    def in_flight(self) -> int:
        """Requests whose handler is running."""
        return 0 if self._state is None else len(self._state.tasks)

    def stop_accepting(self) -> None:
        """Close the listening sockets and idle connections; busy connections close
        after their current response, which says `Connection: close` if not yet started."""
        for server in self._servers:
            server.close()
        state = self._state
        if state is None:
            return
        state.stopping = True
        for conn in list(state.connections):
            conn.stop()

    async def drain(self, grace: float) -> bool:
        """Wait up to grace seconds for running handlers; True when none is left."""
        state = self._state
        if state is None or not state.tasks:
            return True
        try:
            async with asyncio.timeout(grace):
                await state.idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Abort every connection and cancel every handler."""
        self.stop_accepting()
        state = self._state
        if state is not None:
            for conn in list(state.connections):
                conn.abort()
            tasks = list(state.tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=_CANCEL_WAIT)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
