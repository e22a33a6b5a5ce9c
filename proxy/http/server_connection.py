"""One client connection: parsing (httptools/llhttp), pipelining, flow control, timeouts.

Requests on a connection are answered strictly in order: a parsed request waits in a
queue until the response before it is finished. Reading pauses when unread body bytes
pass the high-water mark or too many requests are queued, so memory per connection stays
bounded whatever the caller sends.

An upgrade request (`Upgrade` + `Connection: upgrade`) is the last request parsed on a
connection; the bytes after its head go to a Tunnel (server_tunnel.py), which its
handler may take over with `Reply.switch_protocols`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from proxy.http.server_parse import Refusal, Rejected, RequestParser
from proxy.http.server_reply import Reply, error_response
from proxy.http.server_state import ServerState, log
from proxy.http.server_timer import HEADER, IDLE, Deadline
from proxy.http.server_tunnel import Tunnel

if TYPE_CHECKING:
    from asyncio import Future, Task

    from proxy.http.server_request import Request

# Parsed requests waiting behind the one being answered before reading pauses.
_MAX_QUEUED = 16
# An unread body this small is read and dropped to keep the connection; larger: close.
_DISCARD_LIMIT = 64 * 1024
# Big reads outside a body are parsed in slices, so the queue bound and the head-size
# bound hold to within one slice.
_SLICE = 4 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = (400, "bad_request", "malformed HTTP request")


class HttpConnection(asyncio.Protocol):
    """The asyncio protocol of one connection; httptools hands it the body bytes."""

    __slots__ = (
        "_active",
        "_backlog",
        "_body_fed",
        "_buffered",
        "_closed",
        "_drain_waiter",
        "_framing_run",
        "_head",
        "_head_deadline",
        "_head_spill",
        "_high_water",
        "_input_done",
        "_limits",
        "_low_water",
        "_parsing",
        "_pending_error",
        "_queue",
        "_reading_paused",
        "_reply",
        "_stopping",
        "_timer",
        "_tunnel",
        "loop",
        "state",
        "transport",
        "write_paused",
    )

    def __init__(self, state: ServerState) -> None:
        limits = state.limits
        self.state = state
        self._limits = limits
        self.loop = state.loop
        self._high_water = limits.high_water
        self._low_water = limits.high_water // 4
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        # parsing
        self._head = RequestParser(self, limits)
        self._head_spill = 0
        self._head_deadline = 0.0
        self._parsing: Request | None = None
        self._body_fed = 0
        self._framing_run = 0
        # pipeline
        self._queue: deque[Request] = deque()
        self._active: Request | None = None
        self._reply: Reply | None = None
        self._backlog: bytes | None = None
        self._pending_error: Refusal | None = None
        self._input_done = False
        self._stopping = False
        self._closed = False
        # flow control
        self._buffered = 0
        self._reading_paused = False
        self.write_paused = False
        self._drain_waiter: Future[None] | None = None
        self._timer = Deadline(state.loop, self._deadline_passed)
        self._tunnel: Tunnel | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._head.remote = peer[0]
        state = self.state
        state.connections.add(self)
        if state.stopping:
            self._stopping = True
            self._close()
            return
        self._timer.set(IDLE, self.loop.time() + self._limits.keepalive_timeout)

    def data_received(self, data: bytes) -> None:
        if self._input_done:
            if self._tunnel is not None:
                self._tunnel_received(data)
            return
        if len(data) <= _SLICE or self._parsing is not None:
            self._feed(data)
        else:
            self._feed_sliced(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._input_done = True
        self._timer.cancel()
        self.state.connections.discard(self)
        reply = self._reply
        if reply is not None:
            reply.disconnected = True
        request = self._parsing
        if request is not None:
            request._failed = True
            request._wake()
        self._queue.clear()
        self._backlog = None
        self._pending_error = None
        if self._tunnel is not None:
            self._tunnel.end()
        self._wake_writers()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writers()

    # --- httptools callbacks ------------------------------------------------------------

    def head_complete(self, request: Request) -> None:
        """A request head is parsed: answer it now or queue it behind the others."""
        self._parsing = request
        self._framing_run = 0
        if self._active is None and not self._queue:
            self._dispatch(request)
        else:
            self._queue.append(request)
            if len(self._queue) > _MAX_QUEUED:
                self._pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None  # llhttp sends body bytes only after the head
        size = len(body)
        self._body_fed += size
        if request._discarding:
            self._discard(request, size)
            return
        request._received += size
        chunks = request._chunks
        if chunks is None:
            chunks = request._chunks = deque()
        chunks.append(body)
        waiter = request._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        buffered = self._buffered + size
        self._buffered = buffered
        if buffered > self._high_water:
            self._pause_reading()

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is None:
            return
        self._parsing = None
        request._complete = True
        request._wake()
        if not request.keep_alive:
            self._input_done = True

    # --- parsing helpers ----------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
        head = self._head
        begun = head.messages
        self._body_fed = 0
        try:
            head.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._input_done = True
            self._tunnel = Tunnel(self)
            offset: int = upgrade.args[0]
            if offset < len(data):
                self._tunnel_received(data[offset:])
            return
        except httptools.HttpParserError:
            self._parse_failed()
            return
        if head.in_head:
            if head.messages != begun:
                self._head_spill = 0
                deadline = self.loop.time() + self._limits.header_timeout
                self._head_deadline = deadline
                if self._active is None and not self._queue:
                    self._timer.set(HEADER, deadline)
                return
            # Bytes of a head httptools is still assembling: bound them as they arrive.
            self._head_spill += len(data)
            if self._head_spill > self._limits.max_head_bytes:
                self._fail_input(431, "headers_too_large", "request headers too large")
        elif self._parsing is not None and head.messages == begun:
            # Chunk framing and trailers are held by httptools, not by us: a run of
            # reads carrying no body bytes at all must stay small.
            if self._body_fed:
                self._framing_run = 0
            else:
                self._framing_run += len(data)
                if self._framing_run > self._limits.max_head_bytes:
                    self._fail_input(400, "bad_request", "chunk framing too large")

    def _feed_sliced(self, data: bytes) -> None:
        view = memoryview(data)
        size = len(data)
        start = 0
        while start < size and not self._input_done:
            if len(self._queue) > _MAX_QUEUED:
                self._backlog = bytes(view[start:])
                self._pause_reading()
                return
            if self._parsing is not None:
                self._feed(view[start:])  # inside a body: keep the bytes in one piece
                return
            self._feed(view[start : start + _SLICE])
            start += _SLICE
        if self._tunnel is not None and start < size:
            self._tunnel_received(view[start:])  # what followed the upgrade head's slice

    def _parse_failed(self) -> None:
        if self._input_done:
            return  # bytes after the last request (Connection: close, an upgrade, ...)
        head = self._head
        refusal = head.refusal or _BAD_REQUEST
        head.refusal = None
        self._fail_input(*refusal)

    def _fail_input(self, status: int, code: str, message: str) -> None:
        """Stop reading requests. A broken head gets an error response once the
        requests before it are answered; a broken body fails its readers instead."""
        self._input_done = True
        self._head.in_head = False
        self._backlog = None
        request = self._parsing
        if request is not None:
            self._parsing = None
            request._failed = True
            request._wake()
        else:
            self._pending_error = (status, code, message)
        if self._active is None and not self._queue:
            self._advance()

    def _tunnel_received(self, data: bytes | memoryview) -> None:
        tunnel = self._tunnel
        assert tunnel is not None
        # Counted with body bytes: the same high-water mark pauses reading.
        size = len(data)
        tunnel.feed(bytes(data))
        buffered = self._buffered + size
        self._buffered = buffered
        if buffered > self._high_water:
            self._pause_reading()

    @property
    def tunnel(self) -> Tunnel | None:
        """The bytes after an upgrade request's head, once one was parsed."""
        return self._tunnel

    def _discard(self, request: Request, size: int) -> None:
        left = request._discard_left - size
        request._discard_left = left
        if left < 0:
            self._close()
            raise Rejected

    # --- the pipeline -------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        reply = Reply(self, request)
        self._active = request
        self._reply = reply
        self._timer.clear()
        state = self.state
        task: Task[None] = self.loop.create_task(state.handler(request, reply))  # type: ignore[arg-type]
        state.handler_started(task)
        task.add_done_callback(reply._handler_done)

    def should_close_after(self, request: Request) -> bool:
        """Whether the response now starting must say `Connection: close`."""
        if not request.keep_alive or self._stopping:
            return True
        if self._input_done and self._pending_error is None and not self._queue:
            return True
        if request._complete:
            return False
        if request._expect_continue:
            return True  # never invited the body: the caller may or may not send it
        if request._touched:
            return False
        length = request.content_length
        return length is None or length - request._received > _DISCARD_LIMIT

    def response_done(self, reply: Reply) -> None:
        """The active response is complete on the wire: move on or close."""
        if self._reply is not reply:
            return
        request = self._active
        assert request is not None
        self._active = None
        self._reply = None
        self._buffered -= request._drop_buffered()
        if reply.closes_connection or self._stopping or not self._keep_body_framing(request):
            self._close()
            return
        self._advance()

    def _keep_body_framing(self, request: Request) -> bool:
        """After the response: an unread remainder of the body small enough is read and
        dropped; otherwise the connection cannot be reused (False)."""
        if request._complete:
            return True
        if request._failed or request._expect_continue:
            return False
        length = request.content_length
        budget = _DISCARD_LIMIT if length is None else length - request._received
        if budget > _DISCARD_LIMIT:
            return False
        request._discarding = True
        request._discard_left = budget
        request._wake()
        return True

    def _advance(self) -> None:
        """Nothing is being answered: start the next request, or settle down."""
        if self._closed:
            return
        queue = self._queue
        if queue:
            self._dispatch(queue.popleft())
            self._feed_backlog()
            self._maybe_resume_reading()
            return
        pending = self._pending_error
        if pending is not None:
            self._pending_error = None
            self._write_error(*pending)
            return
        if self._input_done or self._stopping:
            self._close()
            return
        self._feed_backlog()
        self._maybe_resume_reading()
        if self._active is not None or self._input_done:
            return
        if self._head.in_head:
            self._timer.set(HEADER, self._head_deadline)
        else:
            self._timer.set(IDLE, self.loop.time() + self._limits.keepalive_timeout)

    def _feed_backlog(self) -> None:
        backlog = self._backlog
        if backlog is not None and len(self._queue) <= _MAX_QUEUED:
            self._backlog = None
            self._feed_sliced(backlog)

    def _write_error(self, status: int, code: str, message: str) -> None:
        try:
            headers, body = self.state.error_body(status, code, message)
            self.transport.write(error_response(status, headers, body))
        except Exception:
            log.exception("rendering an error response failed")
        self._close()

    # --- flow control -------------------------------------------------------------------

    def send_continue(self) -> None:
        reply = self._reply
        if reply is not None and not reply.started and not reply.disconnected:
            self.transport.write(_CONTINUE)

    def body_consumed(self, size: int) -> None:
        buffered = self._buffered - size
        self._buffered = buffered
        if self._reading_paused and buffered < self._low_water:
            self._maybe_resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and not self.transport.is_closing()
            and self._buffered < self._low_water
            and len(self._queue) <= _MAX_QUEUED
            and self._backlog is None
        ):
            self._reading_paused = False
            self.transport.resume_reading()

    async def wait_writable(self) -> None:
        """Wait until the transport takes writes again; one future per pause."""
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = self.loop.create_future()
        await waiter

    def _wake_writers(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def buffered(self) -> int:
        """Request body bytes received and not yet read by a handler."""
        return self._buffered

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    @property
    def closed(self) -> bool:
        return self._closed

    # --- timers and closing -------------------------------------------------------------

    def _deadline_passed(self, kind: int) -> None:
        if self._closed or self._active is not None or self._queue:
            return  # _advance() sets the deadline again once the pipeline is free
        if kind == IDLE:
            self._close()
        else:
            self._fail_input(408, "request_timeout", "request header timeout")

    def stop(self) -> None:
        """Server shutdown: close now if idle, else after the current response."""
        self._stopping = True
        if self._active is None and not self._queue:
            self._close()

    def _close(self) -> None:
        self._input_done = True
        self._queue.clear()
        self._backlog = None
        if not self._closed and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._input_done = True
        reply = self._reply
        if reply is not None:
            reply.disconnected = True
        if not self._closed:
            self.transport.abort()
