"""What every connection of one HttpServer shares: limits, the handler, the running
handler tasks, and what to do when a handler task ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.http.server_reply import ClientDisconnected, Reply
from proxy.http.server_request import BodyIncomplete, BodyTooLarge, Request

if TYPE_CHECKING:
    from asyncio import Task

    from proxy.http.server_connection import HttpConnection

log = logging.getLogger("authgate.http")

Handler = Callable[[Request, Reply], Awaitable[None]]
ErrorBody = Callable[[int, str, str], tuple[list[tuple[str, str]], bytes]]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    keepalive_timeout: float = 61.0  # idle keep-alive connection closed after this
    header_timeout: float = 30.0  # a request's head must arrive within this of its first byte
    max_request_line: int = 64 * 1024  # bytes of the request target
    max_head_bytes: int = 128 * 1024  # request line + all headers
    max_headers: int = 200
    high_water: int = 256 * 1024  # unread body bytes before reading pauses (resumes at 1/4)


class ServerState:
    __slots__ = (
        "connections",
        "error_body",
        "handler",
        "idle",
        "limits",
        "loop",
        "stopping",
        "tasks",
    )

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        error_body: ErrorBody,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.error_body = error_body
        self.loop = loop
        self.connections: set[HttpConnection] = set()
        # Strong references: the loop keeps only weak ones to running tasks.
        self.tasks: set[Task[None]] = set()
        self.idle = asyncio.Event()  # set while no handler runs
        self.idle.set()
        self.stopping = False

    def handler_started(self, task: Task[None]) -> None:
        self.tasks.add(task)
        self.idle.clear()

    def handler_done(self, reply: Reply, task: Task[None]) -> None:
        """A handler task ended: complete whatever it left unfinished."""
        tasks = self.tasks
        tasks.discard(task)
        if not tasks:
            self.idle.set()
        if task.cancelled():
            if not reply.finished:
                reply.abort()
            return
        error = task.exception()
        if error is None:
            self._returned(reply)
        elif reply.finished:
            if not isinstance(error, (ClientDisconnected, BodyIncomplete)):
                log.error("request handler failed after its response", exc_info=error)
        elif reply.disconnected or isinstance(error, ClientDisconnected):
            reply.abort()
        elif reply.started:
            log.error("request handler failed after the response started", exc_info=error)
            reply.abort()
        elif isinstance(error, BodyTooLarge):
            self._respond_error(reply, 413, "body_too_large", "request body too large")
        elif isinstance(error, BodyIncomplete):
            self._respond_error(reply, 400, "bad_request", "incomplete request body")
        else:
            log.error("request handler failed", exc_info=error)
            self._respond_error(reply, 500, "internal_error", "internal server error")

    def _returned(self, reply: Reply) -> None:
        if reply.finished:
            return
        if reply.started or reply.disconnected:
            reply.finish()  # aborts instead when the body fell short of its length
            return
        log.error("request handler returned without a response")
        self._respond_error(reply, 500, "internal_error", "internal server error")

    def _respond_error(self, reply: Reply, status: int, code: str, message: str) -> None:
        try:
            headers, body = self.error_body(status, code, message)
            reply.respond(status, headers, body)
        except Exception:
            log.exception("rendering an error response failed")
            reply.abort()
