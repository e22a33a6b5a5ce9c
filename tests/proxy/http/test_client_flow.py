"""Backpressure both ways, TLS, and the unix-socket mode.

The backpressure tests never look at the clock: the server is an asyncio Protocol that
reports when its own transport is full (pause_writing), and each test moves only on
those reports, checking how much the client has taken in without being asked.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web

from proxy.http.client import ClientLimits, ConnectError, HttpClient, PoolStats
from tests.proxy.http.test_client_support import (
    RawRequest,
    RawServer,
    client,
    keep_alive,
    ok,
    self_signed_tls,
    serving_app,
)

__all__ = ["client"]  # the fixture, imported for pytest

MiB = 1024 * 1024


class Progress:
    """What the server side has done, with an event set on every change."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.written = 0
        self.received = 0
        self.stalled = False
        self.done = False

    def note(self) -> None:
        self.changed.set()

    async def until(self, condition: str) -> None:
        while not getattr(self, condition) and not self.done:
            self.changed.clear()
            await self.changed.wait()


class Sender(asyncio.Protocol):
    """Answers the first request with a big body, as fast as its transport takes it."""

    def __init__(self, body: bytes, progress: Progress) -> None:
        self.body = body
        self.progress = progress
        self.request = b""
        self.offset = -1
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: alike, not a subclass

    def data_received(self, data: bytes) -> None:
        self.request += data
        if self.offset < 0 and b"\r\n\r\n" in self.request:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body))
            self.offset = 0
            self.write_more()

    def write_more(self) -> None:
        assert self.transport is not None
        while not self.paused and self.offset < len(self.body):
            piece = self.body[self.offset : self.offset + 65536]
            self.offset += len(piece)
            self.transport.write(piece)
            self.progress.written += len(piece)
        self.progress.done = self.offset >= len(self.body)
        self.progress.note()

    def pause_writing(self) -> None:
        self.paused = self.progress.stalled = True
        self.progress.note()

    def resume_writing(self) -> None:
        self.paused = self.progress.stalled = False
        self.write_more()


class Receiver(asyncio.Protocol):
    """Counts request body bytes as they arrive; answers once ``expected`` are in."""

    def __init__(self, expected: int, progress: Progress) -> None:
        self.expected = expected
        self.progress = progress
        self.head = b""
        self.digest = hashlib.sha256()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: alike, not a subclass

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" not in self.head:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.head, _, data = self.head.partition(b"\r\n\r\n")
            self.head += b"\r\n\r\n"
        self.progress.received += len(data)
        self.digest.update(data)
        if self.progress.received >= self.expected and self.transport is not None:
            self.transport.write(ok(self.digest.hexdigest().encode()))
            self.progress.done = True
        self.progress.note()


async def test_a_slow_reader_pauses_the_download() -> None:
    body = bytes(range(256)) * (256 * 1024)  # 64 MiB
    high_water = 64 * 1024
    progress = Progress()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sender(body, progress), "127.0.0.1", 0)
    http = HttpClient(ClientLimits(high_water=high_water))
    port = server.sockets[0].getsockname()[1]
    try:
        response = await http.request("GET", f"http://127.0.0.1:{port}/", [])
        chunks = response.iter_chunks()
        digest = hashlib.sha256()
        paused_while_server_stalled = False
        while True:
            # Read only while the server cannot write any more (or has finished): the
            # client must have stopped reading by itself long before that.
            await progress.until("stalled")
            assert response._buffered <= high_water + MiB
            conn = response._conn
            if progress.stalled and conn is not None and conn.transport is not None:
                paused_while_server_stalled |= not conn.transport.is_reading()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            digest.update(chunk)
        assert digest.digest() == hashlib.sha256(body).digest()
        assert paused_while_server_stalled
        assert http.stats() == PoolStats(in_use=0, idle=1, limit=0)
    finally:
        await http.close()
        server.close()
        await server.wait_closed()


async def test_a_slow_upstream_pauses_the_upload() -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    total = 96 * MiB
    # In flight at most: transport buffer, the kernel's send and receive buffers on
    # loopback (at most 4 + 32 MiB here). Without backpressure it would be everything.
    bound = 48 * MiB
    progress = Progress()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Receiver(total, progress), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = HttpClient()
    produced = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < total:
            assert produced - progress.received <= bound
            produced += len(piece)
            yield piece

    try:
        headers = [("Content-Length", str(total))]
        response = await http.request("PUT", f"http://127.0.0.1:{port}/", headers, upload())
        expected = hashlib.sha256(piece * (total // len(piece))).hexdigest()
        assert await response.read() == expected.encode()
    finally:
        await http.close()
        server.close()
        await server.wait_closed()


async def test_a_chunked_upload_waits_for_the_transport_too() -> None:
    piece = b"c" * 65536
    total = 96 * MiB
    progress = Progress()
    loop = asyncio.get_running_loop()
    # Chunk framing adds bytes: the receiver counts past `total` before answering.
    framed_total = total + (total // len(piece)) * len(b"10000\r\n\r\n") + len(b"0\r\n\r\n")
    server = await loop.create_server(lambda: Receiver(framed_total, progress), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = HttpClient()
    produced = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < total:
            assert produced - progress.received <= 48 * MiB
            produced += len(piece)
            yield piece

    try:
        response = await http.request("POST", f"http://127.0.0.1:{port}/", [], upload())
        assert response.status == 200
        await response.read()
    finally:
        await http.close()
        server.close()
        await server.wait_closed()


# -- TLS ------------------------------------------------------------------------------------


def _tls_app() -> web.Application:
    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.Response(text=f"{request.host} {request.secure} {peer}")

    app = web.Application()
    app.router.add_get("/", whoami)
    return app


async def test_tls_with_a_trusted_self_signed_certificate(tmp_path: Path) -> None:
    tls = self_signed_tls(tmp_path)
    http = HttpClient(ssl_context=tls.client)
    try:
        async with serving_app(_tls_app(), ssl=tls.server) as server:
            answers = []
            for host in ("127.0.0.1", "localhost", "127.0.0.1"):
                url = f"https://{host}:{server.port}/"
                response = await http.request("GET", url, [])
                answers.append((await response.read()).decode())
            assert answers[0].startswith(f"127.0.0.1:{server.port} True ")
            assert answers[1].startswith(f"localhost:{server.port} True ")
            assert answers[0] == answers[2]  # same client port: the connection was reused
            assert http.stats().idle == 2
    finally:
        await http.close()


async def test_tls_with_an_untrusted_certificate_is_a_connect_error(
    client: HttpClient, tmp_path: Path
) -> None:
    tls = self_signed_tls(tmp_path)
    async with serving_app(_tls_app(), ssl=tls.server) as server:
        with pytest.raises(ConnectError, match="certificate") as raised:
            await client.request("GET", f"https://127.0.0.1:{server.port}/", [])
        assert raised.value.port == server.port
    assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)


async def test_tls_checks_the_name(tmp_path: Path) -> None:
    tls = self_signed_tls(tmp_path)

    class ToLoopback:
        async def resolve(self, host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

    http = HttpClient(ssl_context=tls.client, resolver=ToLoopback())
    try:
        async with serving_app(_tls_app(), ssl=tls.server) as server:
            with pytest.raises(ConnectError, match="certificate"):
                await http.request("GET", f"https://not-the-name.test:{server.port}/", [])
    finally:
        await http.close()


# -- unix socket ----------------------------------------------------------------------------


async def test_unix_socket_carries_every_request_whatever_the_host(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = str(tmp_path_factory.mktemp("u") / "s.sock")

    class NoResolving:
        async def resolve(self, host: str, port: int) -> list[str]:
            raise AssertionError("a unix-socket client never resolves")

    seen: list[RawRequest] = []
    http = HttpClient(unix_socket=path, resolver=NoResolving())
    try:
        async with RawServer(keep_alive(lambda r: ok(r.target.encode()), seen), path) as server:
            for url, target in (
                ("http://management.internal/connections?x=1", b"/connections?x=1"),
                ("http://api.example.test:8080/b", b"/b"),
            ):
                response = await http.request("GET", url, [])
                assert await response.read() == target
        assert server.accepted == 1
        assert [(r.header("host"), r.target) for r in seen] == [
            ("management.internal", "/connections?x=1"),
            ("api.example.test:8080", "/b"),
        ]
    finally:
        await http.close()


async def test_unix_socket_missing_is_a_connect_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = str(tmp_path_factory.mktemp("u") / "missing.sock")
    http = HttpClient(unix_socket=path)
    try:
        with pytest.raises(ConnectError):
            await http.request("GET", "http://management.internal/", [])
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
    finally:
        await http.close()
