"""`authgate serve`'s front carries WebSocket upgrades to the app behind its Unix socket.

The pieces are the real ones `serve` wires: the lean server with the delegate in front,
an aiohttp app on a Unix socket behind, aiohttp's WebSocket client outside. The app here
is a small stand-in with routes made for each check (an echo, a socket that closes, one
that holds), so the tunnel itself is what is tested: frames both ways byte for byte,
closes carried across, answers other than 101 relayed, the app being down, a stop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from authgate.delegate import delegate_to
from proxy.http.client import HttpClient
from proxy.http.server import HttpServer

WAIT = 10.0
MIB = 1024 * 1024


def upgrade_head(path: str) -> bytes:
    """A WebSocket opening handshake, as raw bytes."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()


@dataclass
class App:
    """The stand-in management app and what its handlers saw."""

    ended: dict[str, asyncio.Event] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)

    def ended_event(self, name: str) -> asyncio.Event:
        return self.ended.setdefault(name, asyncio.Event())

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/echo", self.echo)
        app.router.add_get("/bye", self.bye)
        app.router.add_get("/hold", self.hold)
        app.router.add_get("/drop", self.drop)
        app.router.add_get("/plain", self.plain)
        return app

    async def echo(self, request: web.Request) -> web.WebSocketResponse:
        self.headers.append(dict(request.headers))
        socket = web.WebSocketResponse(max_msg_size=4 * MIB)
        await socket.prepare(request)
        try:
            async for message in socket:
                if message.type == WSMsgType.BINARY:
                    await socket.send_bytes(message.data)
                elif message.type == WSMsgType.TEXT:
                    await socket.send_str(message.data)
        finally:
            self.ended_event("echo").set()
        return socket

    async def bye(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str("bye")
        await socket.close(code=4000, message=b"done")
        return socket

    async def hold(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        try:
            await socket.send_str("holding")
            async for _ in socket:
                pass
        finally:
            self.ended_event("hold").set()
        return socket

    async def drop(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str("bye")
        assert request.transport is not None
        request.transport.close()  # gone, without a closing handshake
        return socket

    async def plain(self, request: web.Request) -> web.StreamResponse:
        # Not a WebSocket: a streamed (chunked) answer the front must relay as it is.
        response = web.StreamResponse(headers={"X-App": "plain"})
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"p" * 100_000)
        await response.write_eof()
        return response


@dataclass
class Front:
    server: HttpServer
    app: App
    url: str


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    stand_in = App()
    runner = web.AppRunner(stand_in.build())
    await runner.setup()
    socket_path = str(tmp_path / "management.sock")
    await web.UnixSite(runner, socket_path).start()
    client = HttpClient(unix_socket=socket_path)
    server = HttpServer(delegate_to(client))
    await server.start("127.0.0.1", 0)
    try:
        yield Front(server, stand_in, f"http://127.0.0.1:{server.port}")
    finally:
        await server.close()
        await client.close()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def test_a_mebibyte_frame_passes_intact_both_ways(
    front: Front, session: aiohttp.ClientSession
) -> None:
    binary = os.urandom(MIB)
    text = os.urandom(MIB // 2).hex()
    async with session.ws_connect(f"{front.url}/echo", max_msg_size=4 * MIB) as socket:
        await socket.send_bytes(binary)
        echoed = await socket.receive(timeout=WAIT)
        assert (echoed.type, echoed.data) == (WSMsgType.BINARY, binary)
        await socket.send_str(text)
        assert await socket.receive_str(timeout=WAIT) == text


async def test_the_handshake_reaches_the_app_with_hop_by_hop_fields_dropped(
    front: Front, session: aiohttp.ClientSession
) -> None:
    headers = {"X-Kept": "yes", "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic x"}
    async with session.ws_connect(f"{front.url}/echo", headers=headers) as socket:
        await socket.send_str("hi")
        assert await socket.receive_str(timeout=WAIT) == "hi"
    seen = {name.lower(): value for name, value in front.app.headers[0].items()}
    assert seen["x-kept"] == "yes"
    assert seen["upgrade"] == "websocket"
    assert seen["connection"] == "Upgrade"
    assert "sec-websocket-key" in seen
    assert "keep-alive" not in seen
    assert "proxy-authorization" not in seen


async def test_the_caller_closing_closes_the_app_side(
    front: Front, session: aiohttp.ClientSession
) -> None:
    socket = await session.ws_connect(f"{front.url}/echo")
    await socket.send_str("x")
    assert await socket.receive_str(timeout=WAIT) == "x"
    await socket.close()
    async with asyncio.timeout(WAIT):
        await front.app.ended_event("echo").wait()
        assert await front.server.drain(WAIT)  # the tunnel's handler is gone too


async def test_the_caller_vanishing_closes_the_app_side(front: Front) -> None:
    # No close frame: the caller's TCP connection just goes.
    reader, writer = await asyncio.open_connection("127.0.0.1", front.server.port)
    try:
        writer.write(upgrade_head("/hold"))
        async with asyncio.timeout(WAIT):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 101 ")
    async with asyncio.timeout(WAIT):
        await front.app.ended_event("hold").wait()


async def test_the_app_closing_closes_the_caller_side(
    front: Front, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{front.url}/bye") as socket:
        assert await socket.receive_str(timeout=WAIT) == "bye"
        closing = await socket.receive(timeout=WAIT)
        assert (closing.type, closing.data, closing.extra) == (WSMsgType.CLOSE, 4000, "done")
    async with asyncio.timeout(WAIT):
        assert await front.server.drain(WAIT)


async def test_the_app_dropping_its_side_ends_the_callers_connection(front: Front) -> None:
    # No closing handshake on either side: the app's connection just goes, and a caller
    # that waits on its own must see its connection end too.
    reader, writer = await asyncio.open_connection("127.0.0.1", front.server.port)
    try:
        writer.write(upgrade_head("/drop"))
        async with asyncio.timeout(WAIT):
            everything = await reader.read(-1)
    finally:
        writer.close()
    head, _, frames = everything.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert frames == b"\x81\x03bye"  # one unmasked text frame, then the end


async def test_an_answer_other_than_101_is_relayed_as_a_response(
    front: Front, session: aiohttp.ClientSession
) -> None:
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
    async with session.get(f"{front.url}/plain", headers=upgrade) as response:
        assert response.status == 200
        assert response.headers["X-App"] == "plain"
        assert response.headers["Connection"] == "close"
        assert await response.read() == b"p" * 400_000
    async with session.get(f"{front.url}/nowhere", headers=upgrade) as response:
        assert response.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"{front.url}/plain")
    assert refused.value.status == 200  # aiohttp's client wanted a 101 and got the answer


async def test_an_unreachable_app_is_a_502(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    client = HttpClient(unix_socket=str(tmp_path / "nobody-listens.sock"))
    server = HttpServer(delegate_to(client))
    await server.start("127.0.0.1", 0)
    try:
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
        async with session.get(f"http://127.0.0.1:{server.port}/", headers=upgrade) as response:
            assert response.status == 502
            assert (await response.json())["error"]["code"] == "server_error"
    finally:
        await server.close()
        await client.close()


async def test_a_stop_waits_for_a_tunnel_only_until_close(
    front: Front, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{front.url}/hold") as socket:
        assert await socket.receive_str(timeout=WAIT) == "holding"
        front.server.stop_accepting()
        assert not await front.server.drain(0.05)  # an open tunnel is in flight
        await front.server.close()
        ended = await socket.receive(timeout=WAIT)
        assert ended.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    async with asyncio.timeout(WAIT):
        await front.app.ended_event("hold").wait()
