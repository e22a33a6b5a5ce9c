"""Shared pieces of the HTTP client tests (no tests here).

- ``RawServer``: a real asyncio TCP (or unix) server whose per-connection behaviour a
  test writes as a coroutine, for everything a well-behaved server will not do: close
  mid-body, answer early, send a bad status line, stall. It counts connections.
- ``read_request``: parses one HTTP/1.1 request off a StreamReader, keeping header
  names, order and bytes exactly as received.
- ``serving_app``: an aiohttp application on a real port, for the well-behaved cases.
- ``client``: the fixture every module imports.
- ``self_signed_tls``: a certificate for localhost/127.0.0.1 and the contexts to use it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.http.client import HttpClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.close()


@asynccontextmanager
async def serving_app(app: web.Application, **kwargs: Any) -> AsyncIterator[TestServer]:
    """``app`` on 127.0.0.1 (``ssl=`` for TLS), closed afterwards."""
    server = TestServer(app)
    await server.start_server(**kwargs)
    try:
        yield server
    finally:
        await server.close()


@dataclass
class RawRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    """Latin-1 decoded, names as spelled, in order; values stripped of surrounding OWS."""
    body: bytes = b""
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


async def read_head(reader: asyncio.StreamReader) -> RawRequest | None:
    """The request line and headers; None at EOF before any byte."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head[:-4].split(b"\r\n")
    method, target, version = lines[0].decode("latin-1").split(" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name, value.strip(" \t")))
    return RawRequest(method, target, version, headers, raw_head=head)


async def read_body(reader: asyncio.StreamReader, request: RawRequest) -> bytes:
    length = request.header("content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if (request.header("transfer-encoding") or "").lower() != "chunked":
        return b""
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    request = await read_head(reader)
    if request is not None:
        request.body = await read_body(reader, request)
    return request


def keep_alive(
    reply: Callable[[RawRequest], bytes], seen: list[RawRequest] | None = None
) -> Handler:
    """A handler answering every request of a connection with ``reply(request)``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if seen is not None:
                seen.append(request)
            writer.write(reply(request))
            await writer.drain()

    return handle


def ok(body: bytes = b"ok", *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body),
        head.encode("latin-1"),
        body,
    )


@dataclass
class RawServer:
    handler: Handler
    unix_path: str | None = None
    accepted: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> RawServer:
        if self.unix_path is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        else:
            self._server = await asyncio.start_unix_server(self._serve, self.unix_path)
        if self.unix_path is None:
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, target: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{target}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: part of several tests
        except asyncio.CancelledError:
            # Teardown. Finishing normally: asyncio's stream server logs an error for a
            # connection task that ends cancelled (Python 3.11).
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


def self_signed_tls(directory: Path) -> Tls:
    """A certificate for localhost and 127.0.0.1, trusted by ``client`` only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return Tls(server=server, client=client)
