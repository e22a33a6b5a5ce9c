"""A fake third-party API on a real socket that records exactly what it received.

Tests script its answers per path with `respond(path, handler)`; unscripted paths echo
the request as JSON. Every request is recorded with its raw target, raw headers and body
bytes, so tests assert on what went over the wire, not on what our code meant to send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        values = [value for key, value in self.headers if key.lower() == wanted]
        return values[-1] if values else None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}


class FakeProvider:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, Handler] = {}
        self.app = web.Application(client_max_size=1024**3)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def respond(self, path: str, handler: Handler) -> None:
        self._scripts[path] = handler

    def last(self) -> Received:
        assert self.received, "the fake provider received nothing"
        return self.received[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        script = self._scripts.get(request.path)
        if script is not None and getattr(script, "streams_request", False):
            self._record(request, b"")
            return await script(request)
        body = await request.read()
        self._record(request, body)
        if script is not None:
            return await script(request)
        return _echo(request, body)

    def _record(self, request: web.Request, body: bytes) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.received.append(Received(request.method, request.raw_path, headers, body))


def streams_request(handler: Handler) -> Handler:
    """Mark a script that reads the request body itself (large uploads)."""
    handler.streams_request = True  # type: ignore[attr-defined]
    return handler


def _echo(request: web.Request, body: bytes) -> web.Response:
    payload = {"method": request.method, "path": request.raw_path, "size": len(body)}
    return web.Response(body=orjson.dumps(payload), content_type="application/json")
