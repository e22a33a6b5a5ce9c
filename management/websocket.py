"""The WebSocket the frontend SDK opens to hear how an authorisation ended.

`@nangohq/frontend` opens `ws(s)://<host>/` before it points its popup at
`/oauth/connect/...`. Each socket gets a fresh UUID v4 at once, in
`{"message_type":"connection_ack","ws_client_id":<id>}`; the popup carries that id
through the flow, and the flow's outcome comes back on the socket as one `success` or
`error` message. The server then closes the socket (the SDK closes it too, on either).

Replicas: the socket is held by one process, while the OAuth callback may land on
another. A publish first looks for the socket here; failing that, with Redis, it goes
out on the channel `<prefix>:ws:<id>`, and every process hands what it hears to the
socket it holds. Each process has one pattern subscription (`<prefix>:ws:*`), made at
start, rather than one subscription per socket: results are rare (one per
authorisation), so the fan-out to every process costs nothing, and there is no window
between a socket's ack and its own subscription in which its result could be missed.
Pub/sub delivers at most once, and not at all to a process that is re-subscribing after
a Redis outage. So a result that goes through Redis is also kept there for a while
(`<prefix>:ws-result:<id>`, RESULT_TTL): each time a process's subscription is
confirmed, it looks up the kept results of the sockets it holds and delivers those, so
a browser waiting through a Redis blip still hears how its authorisation ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis
from aiohttp import WSCloseCode, web

from credentials.config import DEFAULT_REDIS_PREFIX
from credentials.redis_client import REDIS_FAILURES
from credentials.runtime import CoreServices
from credentials.tasks import spawn
from management.auth import public
from management.errors import ApiError, error_response
from management.request_context import PUBLISHER

log = logging.getLogger("authgate.management.websocket")

PATH = "/"
"""Where the SDK looks by default (its `websocketsPath`)."""

CAPACITY_CODE = "too_many_websockets"
# The SDK sends nothing on its socket; a client that does gets little room.
_MAX_CLIENT_MESSAGE = 4 * 1024
# How long one Redis read waits before the listener checks whether to stop (redis-py
# may swallow a cancellation that lands inside a read).
_POLL_SECONDS = 0.5
_RECONNECT_FIRST_DELAY = 0.2
_RECONNECT_MAX_DELAY = 5.0
_STARTUP_SUBSCRIBE_WAIT = 1.0
RESULT_TTL = 120
"""Seconds a result published through Redis is kept for a process that missed it."""


@dataclass(frozen=True, slots=True)
class SocketLimits:
    idle_timeout: float = 15 * 60.0
    """A socket that has no result this long after it opened is closed; longer than
    anyone spends on a consent screen."""
    heartbeat: float = 30.0
    """Seconds between pings; a peer that has not answered within half of it is dropped
    (and the traffic keeps idle-timeout proxies from cutting a waiting socket)."""
    max_sockets: int = 10_000
    """Open sockets per process; beyond it a new one is refused with a 503."""
    close_timeout: float = 5.0
    """How long a close waits for the peer's closing frame."""


def install_websocket(
    app: web.Application, core: CoreServices, limits: SocketLimits | None = None
) -> Publisher:
    """Serve the SDK's WebSocket on `app` and make it the app's result publisher."""
    publisher = Publisher(core.redis, prefix=core.settings.redis_prefix, limits=limits)
    publisher.install(app)
    return publisher


@public
async def websocket_endpoint(request: web.Request) -> web.StreamResponse:
    """GET /: the SDK's WebSocket; anything else at `/` is a 404, as before."""
    return await request.app[WEBSOCKETS].serve(request)


class Publisher:
    """Holds this process's sockets and delivers results to them, from here or, through
    Redis, from any process (see the module docstring). Implements `ResultPublisher`."""

    def __init__(
        self,
        redis_client: redis.Redis | None = None,
        *,
        prefix: str = DEFAULT_REDIS_PREFIX,
        limits: SocketLimits | None = None,
    ) -> None:
        self._redis = redis_client
        self._channel_prefix = f"{prefix}:ws:"
        self._result_prefix = f"{prefix}:ws-result:"
        self._limits = limits or SocketLimits()
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._open = 0
        self._open_changed = asyncio.Event()
        self._closing = False
        self._closers: set[asyncio.Task[bool]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        """Set while the Redis pattern subscription is confirmed (tests wait on it)."""

    def install(self, app: web.Application) -> None:
        app[WEBSOCKETS] = self
        app[PUBLISHER] = self
        app.router.add_get(PATH, websocket_endpoint)
        app.cleanup_ctx.append(self._listening)
        app.on_shutdown.append(self._close_sockets)

    @property
    def open_sockets(self) -> int:
        """Sockets of this process, from handshake to close."""
        return self._open

    async def until_open_sockets(self, count: int) -> None:
        """Wait until this process holds exactly `count` sockets."""
        while self._open != count:
            await self._open_changed.wait()

    def _count_open(self, change: int) -> None:
        self._open += change
        changed, self._open_changed = self._open_changed, asyncio.Event()
        changed.set()

    # --- the endpoint -------------------------------------------------------------------

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").strip().lower() != "websocket":
            raise web.HTTPNotFound()
        if self._closing or self._open >= self._limits.max_sockets:
            return _refusal()
        self._count_open(+1)
        try:
            return await self._hold(request)
        finally:
            self._count_open(-1)

    async def _hold(self, request: web.Request) -> web.WebSocketResponse:
        limits = self._limits
        socket = web.WebSocketResponse(
            heartbeat=limits.heartbeat,
            timeout=limits.close_timeout,
            max_msg_size=_MAX_CLIENT_MESSAGE,
        )
        await socket.prepare(request)  # a broken handshake is a 400 envelope
        if self._closing:
            await socket.close(code=WSCloseCode.GOING_AWAY)
            return socket
        client_id = str(uuid.uuid4())
        self._sockets[client_id] = socket
        try:
            ack = {"message_type": "connection_ack", "ws_client_id": client_id}
            await socket.send_str(orjson.dumps(ack).decode())
            await self._wait_for_result(socket)
        except ConnectionError:
            pass  # the peer went away; nothing to tell it
        finally:
            if self._sockets.get(client_id) is socket:
                del self._sockets[client_id]
        return socket

    async def _wait_for_result(self, socket: web.WebSocketResponse) -> None:
        """Until the socket closes: a delivered result closes it, so does the peer, the
        heartbeat, or the idle timeout."""
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                async for _ in socket:
                    pass  # the SDK sends nothing; whatever a client sends is ignored
        except TimeoutError:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"idle")

    # --- publishing (ResultPublisher) ---------------------------------------------------

    async def publish_success(
        self,
        ws_client_id: str,
        provider_config_key: str,
        connection_id: str,
        *,
        is_pending: bool = False,
    ) -> None:
        message = {
            "message_type": "success",
            "provider_config_key": provider_config_key,
            "connection_id": connection_id,
            "is_pending": is_pending,
        }
        await self._publish(ws_client_id, message)

    async def publish_error(self, ws_client_id: str, error_type: str, error_desc: str) -> None:
        message = {"message_type": "error", "error_type": error_type, "error_desc": error_desc}
        await self._publish(ws_client_id, message)

    async def _publish(self, client_id: str, message: dict[str, Any]) -> None:
        if not _is_client_id(client_id):
            # Ids come back from the browser: only the ones this service hands out count.
            log.debug("result for a malformed ws_client_id dropped")
            return
        text = orjson.dumps(message).decode()
        if await self._deliver(client_id, text):
            return
        if self._redis is None:
            log.debug("result for a socket not held here dropped (no Redis to look further)")
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._result_prefix + client_id, text, ex=RESULT_TTL)
                pipe.publish(self._channel_prefix + client_id, text)
                await pipe.execute()
        except REDIS_FAILURES as failure:
            log.warning(
                "could not publish an authorisation result to the other processes",
                extra={"failure": type(failure).__name__},
            )

    async def _deliver(self, client_id: str, text: str) -> bool:
        """Send to the socket with this id if this process holds it; True if it did."""
        socket = self._sockets.pop(client_id, None)
        if socket is None:
            return False
        try:
            await socket.send_str(text)
        except ConnectionError:
            log.debug("a socket closed before its result arrived")
        # The close handshake may wait on a slow peer; the publisher (an OAuth callback,
        # the Redis listener) must not.
        closer = spawn(socket.close(), name="websocket-close")
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)
        return True

    # --- Redis --------------------------------------------------------------------------

    async def _listening(self, app: web.Application) -> AsyncIterator[None]:
        if self._redis is not None:
            self._listener = spawn(self._listen_until_closed(), name="websocket-results")
            # Serving starts subscribed when Redis answers (no result of the first moments
            # is missed, and no subscription traffic trails the start); a Redis that does
            # not answer delays the start this much at most, then is retried behind.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STARTUP_SUBSCRIBE_WAIT):
                    await self.subscribed.wait()
        yield
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    async def _listen_until_closed(self) -> None:
        delay = _RECONNECT_FIRST_DELAY
        while not self._closing:
            try:
                await self._listen()
            except REDIS_FAILURES as failure:
                log.warning(
                    "authorisation results subscription lost; retrying",
                    extra={"failure": type(failure).__name__, "retry_in_s": delay},
                )
            if self.subscribed.is_set():
                delay = _RECONNECT_FIRST_DELAY
            self.subscribed.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_DELAY)

    async def _listen(self) -> None:
        assert self._redis is not None
        async with self._redis.pubsub() as pubsub:
            await pubsub.psubscribe(_glob_escape(self._channel_prefix) + "*")
            while not self._closing:
                message = await pubsub.get_message(timeout=_POLL_SECONDS)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "psubscribe":
                    # Confirmed by Redis: nothing published from now on is missed, and
                    # what was published before is kept.
                    await self._deliver_kept_results()
                    self.subscribed.set()
                elif kind == "pmessage":
                    await self._receive(message["channel"], message["data"])

    async def _receive(self, channel: bytes, data: bytes) -> None:
        client_id = channel.decode("utf-8", "replace")[len(self._channel_prefix) :]
        if await self._deliver(client_id, data.decode("utf-8", "replace")):
            await self._forget_results([client_id])
        else:
            log.debug("result for a socket held by another process (or gone) ignored")

    async def _deliver_kept_results(self) -> None:
        """Results kept for sockets of this process, published while it was not
        listening (a Redis outage, a re-subscription)."""
        assert self._redis is not None
        waiting = list(self._sockets)
        if not waiting:
            return
        kept = await self._redis.mget([self._result_prefix + client_id for client_id in waiting])
        found = [(client_id, text) for client_id, text in zip(waiting, kept, strict=True) if text]
        delivered = [
            client_id for client_id, text in found if await self._deliver(client_id, _text(text))
        ]
        if delivered:
            log.info(
                "delivered results published while unsubscribed", extra={"count": len(delivered)}
            )
            await self._forget_results(delivered)

    async def _forget_results(self, client_ids: list[str]) -> None:
        """A delivered result need not be kept (it would expire anyway)."""
        assert self._redis is not None
        with contextlib.suppress(*REDIS_FAILURES):
            await self._redis.delete(*(self._result_prefix + client_id for client_id in client_ids))

    # --- shutdown -----------------------------------------------------------------------

    async def _close_sockets(self, app: web.Application) -> None:
        """On shutdown, before the server waits for its handlers: every socket closes
        (going away), so none holds the stop up."""
        self._closing = True
        sockets = list(self._sockets.values())
        self._sockets.clear()
        closing = [socket.close(code=WSCloseCode.GOING_AWAY) for socket in sockets]
        await asyncio.gather(*closing, *self._closers, return_exceptions=True)


WEBSOCKETS = web.AppKey("websockets", Publisher)


def _refusal() -> web.Response:
    response = error_response(
        ApiError(503, CAPACITY_CODE, "This server holds as many WebSockets as it may")
    )
    response.headers["Retry-After"] = "1"
    return response


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _is_client_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _glob_escape(text: str) -> str:
    """`text` matched literally in a Redis pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
