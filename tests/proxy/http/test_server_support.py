"""Helpers for the HTTP server tests: a running server and a raw-bytes client.

No tests here. Every wait is bounded by WAIT through asyncio.timeout; the answers the
server sends are the synchronisation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from proxy.http.server import ErrorBody, Handler, HttpServer, Reply, Request, ServerLimits

WAIT = 10.0


@asynccontextmanager
async def serving(
    handler: Handler, limits: ServerLimits | None = None, *, error_body: ErrorBody | None = None
) -> AsyncIterator[HttpServer]:
    server = HttpServer(handler, limits or ServerLimits(), error_body=error_body)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


async def echo(request: Request, reply: Reply) -> None:
    """Answers with the request body, streamed back as it arrives."""
    reply.start(200, [("Content-Type", "application/octet-stream")])
    async for chunk in request.iter_chunks():
        await reply.write(chunk)
    reply.finish()


async def hello(request: Request, reply: Reply) -> None:
    reply.respond(200, [("Content-Type", "text/plain")], b"hello " + request.raw_path.encode())


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes
    framing: bytes = b""  # the raw chunked body as it was on the wire
    extra: dict[str, object] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def names(self) -> list[str]:
        return [key.lower() for key, _ in self.headers]


class RawClient:
    """Writes exact bytes and reads responses off one socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_head(self) -> RawResponse:
        async with asyncio.timeout(WAIT):
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        return RawResponse(int(status), reason[0] if reason else "", headers, b"", head)

    async def response(self, *, head_request: bool = False) -> RawResponse:
        """The next final response (1xx skipped), its body read by its framing."""
        response = await self.read_head()
        while response.status < 200:
            response = await self.read_head()
        async with asyncio.timeout(WAIT):
            if head_request or response.status in (204, 304):
                return response
            if (response.header("Transfer-Encoding") or "").lower() == "chunked":
                await self._read_chunked(response)
            elif response.header("Content-Length") is not None:
                length = int(response.header("Content-Length") or "0")
                response.body = await self.reader.readexactly(length)
            else:
                response.body = await self.reader.read()
        return response

    async def _read_chunked(self, response: RawResponse) -> None:
        framing = bytearray()
        body = bytearray()
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            framing += size_line
            size = int(size_line[:-2], 16)
            if size == 0:
                framing += await self.reader.readexactly(2)
                break
            data = await self.reader.readexactly(size + 2)
            framing += data
            body += data[:-2]
        response.body = bytes(body)
        response.framing = bytes(framing)

    async def read_exactly(self, n: int) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.reader.readexactly(n)

    async def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def closed_by_server(self) -> bool:
        """True when the server ends the connection without sending more bytes."""
        try:
            return await self.rest() == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(port)
    try:
        yield client
    finally:
        await client.close()


def get(path: str = "/", *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *extra, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(path: str, body: bytes, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join([*lines, "", ""])).encode("latin-1") + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part) + b"0\r\n\r\n"
