"""A webhook receiver on a real socket: records every request, answers as scripted.

`answers` holds the responses for the next requests, in order (a status, or a status and
headers); once it is empty every request gets 200. A 3xx answer points `Location` at
`/redirected` on this server, so a sender that followed it would be seen there. While
`hold` is set, requests are recorded and then wait for it, so a test can keep deliveries
in flight. `wait_for(n)` returns once n requests have arrived (bounded, never polled).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

REDIRECT_TARGET = "/redirected"
WAIT_LIMIT = 10.0

Answer = int | tuple[int, dict[str, str]]


@dataclass(frozen=True)
class Delivery:
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class WebhookReceiver:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.answers: list[Answer] = []
        self.hold: asyncio.Event | None = None
        self._arrived = asyncio.Condition()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._receive)

    def __repr__(self) -> str:
        return f"WebhookReceiver(deliveries={len(self.deliveries)})"

    def at(self, path: str) -> list[Delivery]:
        return [delivery for delivery in self.deliveries if delivery.path == path]

    async def wait_for(self, count: int, limit: float = WAIT_LIMIT) -> list[Delivery]:
        async with asyncio.timeout(limit), self._arrived:
            await self._arrived.wait_for(lambda: len(self.deliveries) >= count)
        return list(self.deliveries)

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        delivery = Delivery(request.path, request.query_string, request.headers, body)
        async with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        answer = self.answers.pop(0) if self.answers else 200
        status, headers = (answer, {}) if isinstance(answer, int) else answer
        if 300 <= status < 400:
            headers = {"Location": REDIRECT_TARGET, **headers}
        return web.Response(status=status, headers=headers)


@asynccontextmanager
async def serve_receiver(receiver: WebhookReceiver) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 on a free port; yields the base URL (no trailing slash)."""
    runner = web.AppRunner(receiver.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
