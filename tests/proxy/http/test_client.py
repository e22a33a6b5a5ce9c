"""The upstream HTTP client: what goes on the wire, and what comes back.

Every test talks to a real server over a real socket: aiohttp where a well-behaved
server will do, the raw server of test_client_support where the exact bytes matter.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proxy.http.client import HttpClient, RequestInvalid
from tests.proxy.http.test_client_support import (
    RawRequest,
    RawServer,
    client,
    keep_alive,
    ok,
    serving_app,
)

__all__ = ["client"]  # the fixture, imported for pytest


async def _recorded(
    http: HttpClient,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterator[bytes] | None = None,
) -> RawRequest:
    """Send one request to a raw server and return what the server received."""
    seen: list[RawRequest] = []
    async with RawServer(keep_alive(lambda _: ok(), seen)) as server:
        response = await http.request(method, server.url(target), headers, body)
        assert await response.read() == b"ok"
    [request] = seen
    return request


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- the request on the wire -------------------------------------------------------------


async def test_get_sends_only_host_and_the_callers_headers_in_order(client: HttpClient) -> None:
    headers = [("Accept", "*/*"), ("X-Mixed-CASE", "v"), ("x-dup", "1"), ("X-Dup", "2")]
    seen: list[RawRequest] = []
    async with RawServer(keep_alive(lambda _: ok(), seen)) as server:
        response = await client.request("GET", server.url("/a/b?c=1"), headers)
        await response.read()
    [request] = seen
    assert request.method == "GET"
    assert request.target == "/a/b?c=1"
    assert request.version == "HTTP/1.1"
    assert request.headers == [("Host", f"127.0.0.1:{server.port}"), *headers]
    assert request.body == b""


async def test_callers_host_header_is_sent_and_none_generated(client: HttpClient) -> None:
    request = await _recorded(client, "GET", "/", [("X-A", "1"), ("host", "api.example.test")])
    assert request.headers == [("X-A", "1"), ("host", "api.example.test")]


@pytest.mark.parametrize(
    "target",
    [
        "/a%2Fb//c/?x=1&x=2&y=%20+&z=&x=3",
        "/a/../b/./c/%2e%2e/d",
        '/weird|chars{x}"y"?j={"a":1}&p=\'q\'',
        "/%7Euser;params?a=%zz&b=%",
        "/?",
        "/p?&&",
    ],
)
async def test_request_target_is_sent_exactly_as_given(client: HttpClient, target: str) -> None:
    request = await _recorded(client, "GET", target, [])
    assert request.target == target


async def test_empty_path_becomes_slash_and_fragment_is_not_sent(client: HttpClient) -> None:
    seen: list[RawRequest] = []
    async with RawServer(keep_alive(lambda _: ok(), seen)) as server:
        base = f"http://127.0.0.1:{server.port}"
        for url in (base, base + "?q=1", base + "/p#frag", base + "#x"):
            await (await client.request("GET", url, [])).read()
    assert [r.target for r in seen] == ["/", "/?q=1", "/p", "/"]


async def test_bytes_body_gets_content_length_replacing_the_callers(client: HttpClient) -> None:
    caller = [
        ("Content-Length", "99"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Type", "text/plain"),
    ]
    request = await _recorded(client, "POST", "/", caller, b"abc")
    assert request.headers == [
        ("Host", request.header("host")),
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
    ]
    assert request.body == b"abc"


@pytest.mark.parametrize(
    ("method", "framing"),
    [("POST", [("Content-Length", "0")]), ("PUT", [("Content-Length", "0")]), ("GET", [])],
)
async def test_no_body(client: HttpClient, method: str, framing: list[tuple[str, str]]) -> None:
    request = await _recorded(client, method, "/", [("Content-Length", "7")])
    assert request.headers[1:] == framing


async def test_streamed_body_without_length_is_chunked(client: HttpClient) -> None:
    request = await _recorded(client, "POST", "/", [], _chunks(b"ab", b"", b"cde", b"f" * 70000))
    assert request.headers[1:] == [("Transfer-Encoding", "chunked")]
    assert request.body == b"abcde" + b"f" * 70000


async def test_streamed_body_with_callers_length_is_sent_as_is(client: HttpClient) -> None:
    request = await _recorded(client, "PUT", "/", [("content-length", "5")], _chunks(b"ab", b"cde"))
    assert request.headers[1:] == [("Content-Length", "5")]
    assert request.body == b"abcde"


@pytest.mark.parametrize(
    ("declared", "parts"), [("4", (b"ab", b"cde")), ("6", (b"ab", b"cde")), ("x", (b"a",))]
)
async def test_streamed_body_not_matching_its_length_is_refused(
    client: HttpClient, declared: str, parts: tuple[bytes, ...]
) -> None:
    async with RawServer(keep_alive(lambda _: ok())) as server:
        with pytest.raises(RequestInvalid):
            await client.request(
                "PUT", server.url(), [("Content-Length", declared)], _chunks(*parts)
            )
    assert client.stats().in_use == 0
    assert client.stats().idle == 0


async def test_bytes_beyond_the_declared_length_are_never_sent(client: HttpClient) -> None:
    received = bytearray()
    finished = asyncio.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            while data := await reader.read(65536):
                received.extend(data)
        finally:
            finished.set()

    async with RawServer(record) as server:
        with pytest.raises(RequestInvalid, match="longer"):
            await client.request(
                "PUT", server.url(), [("Content-Length", "4")], _chunks(b"ab", b"cd", b"e")
            )
        async with asyncio.timeout(10):
            await finished.wait()
    assert bytes(received) == b"abcd"


async def test_latin1_headers_round_trip(client: HttpClient) -> None:
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nX-Name: Jos\xe9 \xff\r\nContent-Length: 0\r\n\r\n")
        await reader.read()

    async with RawServer(handle) as server:
        response = await client.request("GET", server.url(), [("X-Name", "caf\u00e9 \u00ff")])
        assert response.raw_headers[0] == (b"X-Name", b"Jos\xe9 \xff")
        assert response.headers["x-name"] == "Jos\u00e9 \u00ff"
        response.release()
    assert b"\r\nX-Name: caf\xe9 \xff\r\n" in received[0]


# -- refused before sending ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("X-A", "secret-value\r\nInjected: 1")],
        [("X-A", "secret-value\nlf")],
        [("X-A", "secret-value\rcr")],
        [("X-A", "secret-value\0byte")],
        [("X-A", "secret-value \u2603")],
        [("X A", "space in name")],
        [("X-A:", "colon in name")],
        [("", "empty name")],
        [("X-\u00e9", "non-ASCII name")],
    ],
)
async def test_bad_header_is_refused_before_connecting(
    client: HttpClient, headers: list[tuple[str, str]]
) -> None:
    async with RawServer(keep_alive(lambda _: ok())) as server:
        with pytest.raises(RequestInvalid) as raised:
            await client.request("GET", server.url(), [("Accept", "*/*"), *headers])
    assert server.accepted == 0
    # The offending value never appears in the message (it could be a credential).
    assert "secret-value" not in str(raised.value)


@pytest.mark.parametrize("method", ["GE T", "GET\r\n", "", "G\u00c9T", "(GET)"])
async def test_bad_method_is_refused(client: HttpClient, method: str) -> None:
    with pytest.raises(RequestInvalid):
        await client.request(method, "http://127.0.0.1:1/", [])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/", "scheme"),
        ("127.0.0.1/x", "scheme"),
        ("//127.0.0.1/", "scheme"),
        ("http:///path", "no host"),
        ("http://:80/", "no host"),
        ("http://user:secret-pass@127.0.0.1/", "userinfo"),
        ("http://127.0.0.1:0/", "port"),
        ("http://127.0.0.1:65536/", "port"),
        ("http://127.0.0.1:8x/", "port"),
        ("http://127.0.0.1:\u0668/", "port"),  # an Arabic-Indic digit
        ("http://[::1/", "unterminated"),
        ("http://[::1]x/", "malformed"),
        ("http://127.0.0.1/a b", "percent-encoded"),
        ("http://127.0.0.1/a\r\nX: y", "percent-encoded"),
        ("http://127.0.0.1/caf\u00e9", "percent-encoded"),
        ("http://exa mple/", "host has characters"),
        ("http://\u2603\u2603..example/", "internationalised"),
    ],
)
async def test_bad_url_is_refused(client: HttpClient, url: str, reason: str) -> None:
    with pytest.raises(RequestInvalid, match=reason) as raised:
        await client.request("GET", url, [])
    assert "secret-pass" not in str(raised.value)


async def test_non_ascii_host_is_idna_encoded(client: HttpClient) -> None:
    class Recording:
        hosts: list[str] = []

        async def resolve(self, host: str, port: int) -> list[str]:
            self.hosts.append(host)
            return ["127.0.0.1"]

    resolver = Recording()
    seen: list[RawRequest] = []
    http = HttpClient(resolver=resolver)
    try:
        async with RawServer(keep_alive(lambda _: ok(), seen)) as server:
            url = f"http://b\u00fccher.example:{server.port}/"
            await (await http.request("GET", url, [])).read()
        assert resolver.hosts == ["xn--bcher-kva.example"]
        assert seen[0].header("host") == f"xn--bcher-kva.example:{server.port}"
    finally:
        await http.close()


# -- what comes back ----------------------------------------------------------------------


async def test_status_reason_version_headers_and_body(client: HttpClient) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=201, reason="Made It", body=b"created", headers={"X-A": "1"})

    app = web.Application()
    app.router.add_post("/things", handler)
    async with serving_app(app) as server:
        response = await client.request("POST", str(server.make_url("/things")), [], b"{}")
        assert (response.status, response.reason, response.version) == (201, "Made It", (1, 1))
        assert response.headers.get("x-a") == "1"
        assert response.headers.get("X-Missing") is None
        assert await response.read() == b"created"
        assert response.complete


async def test_repeated_response_headers_keep_order_and_spelling(client: HttpClient) -> None:
    reply = ok(b"", "Set-Cookie: a=1", "X-Other: o", "set-cookie: b=2", "SET-COOKIE: c=3")
    async with RawServer(keep_alive(lambda _: reply)) as server:
        response = await client.request("GET", server.url(), [])
        await response.read()
    assert response.raw_headers == [
        (b"Content-Length", b"0"),
        (b"Set-Cookie", b"a=1"),
        (b"X-Other", b"o"),
        (b"set-cookie", b"b=2"),
        (b"SET-COOKIE", b"c=3"),
    ]
    headers = response.headers
    assert headers.getall("Set-Cookie") == ["a=1", "b=2", "c=3"]
    assert headers.get("SET-cookie") == "a=1"
    assert headers["set-cookie"] == "a=1"
    assert "x-other" in headers
    assert "x-nope" not in headers
    assert object() not in headers
    assert headers.getall("x-nope") == []
    assert headers.items()[1:] == [
        ("Set-Cookie", "a=1"),
        ("X-Other", "o"),
        ("set-cookie", "b=2"),
        ("SET-COOKIE", "c=3"),
    ]
    assert list(headers) == ["Content-Length", "Set-Cookie", "X-Other"]
    assert len(headers) == 3
    assert dict(headers) == {"Content-Length": "0", "Set-Cookie": "a=1", "X-Other": "o"}
    with pytest.raises(KeyError):
        headers["x-nope"]
    assert "a=1" not in repr(headers)


async def test_five_mib_both_ways_byte_exact(client: HttpClient) -> None:
    upload = os.urandom(5 * 1024 * 1024)
    download = os.urandom(5 * 1024 * 1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        async for chunk in request.content.iter_any():
            digest.update(chunk)
        response = web.StreamResponse(headers={"X-Upload-Sha256": digest.hexdigest()})
        response.content_length = len(download)
        await response.prepare(request)
        for start in range(0, len(download), 100_000):
            await response.write(download[start : start + 100_000])
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_put("/blob", handler)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(upload), 333_333):
            yield upload[start : start + 333_333]

    async with serving_app(app) as server:
        url = str(server.make_url("/blob"))
        for body in (upload, pieces()):
            response = await client.request("PUT", url, [], body)
            assert response.headers["x-upload-sha256"] == hashlib.sha256(upload).hexdigest()
            digest = hashlib.sha256()
            async for chunk in response.iter_chunks():
                assert chunk
                digest.update(chunk)
            assert digest.digest() == hashlib.sha256(download).digest()


async def test_chunked_response_is_dechunked_and_the_connection_reused(
    client: HttpClient,
) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with RawServer(keep_alive(lambda _: reply)) as server:
        for _ in range(2):
            response = await client.request("GET", server.url(), [])
            assert await response.read() == b"hello world"
    assert server.accepted == 1
    assert response.raw_headers == [(b"Transfer-Encoding", b"chunked")]


async def test_head_response_has_no_body_and_the_connection_is_reused(
    client: HttpClient,
) -> None:
    def reply(request: RawRequest) -> bytes:
        if request.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return ok(b"after head")

    async with RawServer(keep_alive(reply)) as server:
        head = await client.request("HEAD", server.url(), [])
        assert head.complete
        assert head.headers["content-length"] == "1000"
        assert await head.read() == b""
        get = await client.request("GET", server.url(), [])
        assert await get.read() == b"after head"
        head_again = await client.request("HEAD", server.url(), [])
        assert await head_again.read() == b""
    assert server.accepted == 1


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_204_and_304_have_no_body_whatever_the_headers(
    client: HttpClient, reply: bytes
) -> None:
    def answer(request: RawRequest) -> bytes:
        return reply if request.target == "/empty" else ok(b"next")

    async with RawServer(keep_alive(answer)) as server:
        empty = await client.request("GET", server.url("/empty"), [])
        assert empty.complete
        assert await empty.read() == b""
        following = await client.request("GET", server.url("/next"), [])
        assert await following.read() == b"next"
    assert server.accepted == 1


async def test_close_delimited_body_ends_at_eof(client: HttpClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        writer.close()

    async with RawServer(handle) as server:
        response = await client.request("GET", server.url(), [])
        assert await response.read() == b"part one, part two"
        assert response.complete
    assert client.stats().idle == 0


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")
