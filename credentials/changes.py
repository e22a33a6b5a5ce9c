"""Cache invalidation within a process and, through Redis, across processes.

The store reports every committed write as a `ChangeEvent`. The hub hands it to the
caches of this process and, when Redis is configured, the bridge publishes it for every
other process and applies theirs here. Pub/sub delivers at most once: whenever the
bridge (re)subscribes — after start or after a Redis outage in which events may have
been lost — every cache is reset instead of guessing what it missed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import redis.asyncio as redis

from credentials.observe import current as observer
from credentials.redis_client import REDIS_FAILURES, open_redis
from credentials.store import ChangeEvent
from credentials.tasks import spawn

log = logging.getLogger("authgate.changes")

Listener = Callable[[ChangeEvent], None]
Reset = Callable[[], None]

RECONNECT_FIRST_DELAY = 0.2
RECONNECT_MAX_DELAY = 5.0
# How long one read waits for a message before the listener checks whether to stop;
# redis-py can swallow a cancellation that lands inside a read, so the loop must not
# depend on cancellation alone.
POLL_SECONDS = 0.5


class ChangeHub:
    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, Reset]] = []
        self.outbox: Listener | None = None

    def subscribe(self, listener: Listener, *, reset: Reset) -> None:
        self._listeners.append((listener, reset))

    def local(self, event: ChangeEvent) -> None:
        """A write of this process: apply here, then tell the others."""
        self.remote(event)
        if self.outbox is not None:
            self.outbox(event)

    def remote(self, event: ChangeEvent) -> None:
        for listener, _ in self._listeners:
            try:
                listener(event)
            except Exception:
                # A broken cache hook must not break the write that triggered it.
                log.exception("cache invalidation hook failed")

    def reset(self) -> None:
        for _, reset in self._listeners:
            try:
                reset()
            except Exception:
                log.exception("cache reset hook failed")


class RedisChangeBridge:
    """Publishes this process's changes on one channel and applies everyone else's."""

    def __init__(self, hub: ChangeHub, redis_url: str, channel: str) -> None:
        self._hub = hub
        self._channel = channel
        self._origin = uuid.uuid4().hex.encode()
        # Short timeouts: a dead or unroutable Redis must fail fast, so start() and the
        # readiness probe never wait on it and the listener retries in the background.
        self._client: redis.Redis = open_redis(redis_url)
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        """Returns at once: subscribing (and retrying while Redis is down) runs behind."""
        self._hub.outbox = self._send
        self._task = spawn(self._run(), name="redis-change-bridge")

    async def close(self) -> None:
        self._hub.outbox = None
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._sends, return_exceptions=True)
        await self._client.aclose()

    async def ping(self) -> None:
        await self._client.ping()

    def _send(self, event: ChangeEvent) -> None:
        task = spawn(self._publish(event), name="redis-change-publish")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _publish(self, event: ChangeEvent) -> None:
        try:
            await self._client.publish(self._channel, self._origin + b" " + event.to_json())
        except REDIS_FAILURES as failure:
            observer().redis_error("change_publish")
            log.warning(
                "could not publish a change; other processes see it when their cache expires",
                extra={"failure": type(failure).__name__},
            )

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self._closing:
            try:
                await self._listen()
            except REDIS_FAILURES as failure:
                observer().redis_error("change_subscribe")
                log.warning(
                    "change subscription lost; retrying",
                    extra={"failure": type(failure).__name__, "retry_in_s": delay},
                )
            if self.subscribed.is_set():
                delay = RECONNECT_FIRST_DELAY
            self.subscribed.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _listen(self) -> None:
        async with self._client.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            self._hub.reset()
            self.subscribed.set()
            while not self._closing:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=POLL_SECONDS
                )
                if message is not None and message.get("type") == "message":
                    self._receive(message["data"])

    def _receive(self, data: bytes) -> None:
        origin, _, payload = data.partition(b" ")
        if origin == self._origin:
            return
        try:
            event = ChangeEvent.from_json(payload)
        except (ValueError, TypeError):
            log.warning("ignoring a malformed change message")
            return
        self._hub.remote(event)
