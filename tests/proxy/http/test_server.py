"""The HTTP/1.1 server: requests, responses, framing and connection reuse, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
from collections.abc import AsyncIterator, Iterable

import aiohttp
import pytest
from yarl import URL

from proxy.http.server import Headers, HttpServer, Reply, Request
from tests.proxy.http.test_server_support import (
    WAIT,
    echo,
    get,
    hello,
    post,
    raw_client,
    serving,
)

MIB = 1024 * 1024


async def describe(request: Request, reply: Reply) -> None:
    """Answers with what the server parsed, one fact a line."""
    headers = request.headers
    facts = [
        request.method,
        request.raw_path,
        f"{request.version[0]}.{request.version[1]}",
        str(request.remote),
        str(request.content_length),
        str(request.body_exists),
        str(request.keep_alive),
        str(headers.get("x-probe")),
        ",".join(headers.getall("X-Many")),
    ]
    reply.respond(200, [("Content-Type", "text/plain")], "\n".join(facts).encode())


# --- requests and bodies ----------------------------------------------------------------


async def test_get_with_aiohttp_sees_raw_target_method_version_and_headers() -> None:
    async with serving(describe) as server, aiohttp.ClientSession() as session:
        url = URL(f"http://127.0.0.1:{server.port}/proxy/a%20b?x=1&y=%2F", encoded=True)
        headers = {"X-Probe": "seen"}
        async with session.get(url, headers=headers) as response:
            assert response.status == 200
            text = await response.text()
    assert text.split("\n") == [
        "GET",
        "/proxy/a%20b?x=1&y=%2F",
        "1.1",
        "127.0.0.1",
        "None",
        "False",
        "True",
        "seen",
        "",
    ]


async def test_post_content_length_body_is_hashed_and_echoed() -> None:
    payload = os.urandom(3 * MIB + 17)
    seen: dict[str, object] = {}

    async def hashing(request: Request, reply: Reply) -> None:
        digest = hashlib.sha256()
        async for chunk in request.iter_chunks():
            digest.update(chunk)
        seen["length"] = request.content_length
        reply.respond(200, [], digest.hexdigest().encode())

    async with serving(hashing) as server, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/upload"
        async with session.post(url, data=io.BytesIO(payload)) as response:
            assert await response.text() == hashlib.sha256(payload).hexdigest()
    assert seen["length"] == len(payload)

    async with (
        serving(echo) as server,
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{server.port}/", data=io.BytesIO(payload)) as response,
    ):
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert hashlib.sha256(await response.read()).digest() == (hashlib.sha256(payload).digest())


async def test_post_chunked_body_is_dechunked() -> None:
    parts = [os.urandom(size) for size in (1, 70_000, 3, MIB, 5)]
    seen: dict[str, object] = {}

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def hashing(request: Request, reply: Reply) -> None:
        seen["facts"] = (request.content_length, request.body_exists)
        data = await request.read_all(10 * MIB)
        reply.respond(200, [], hashlib.sha256(data).hexdigest().encode())

    async with serving(hashing) as server, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/"
        async with session.post(url, data=body()) as response:
            assert await response.text() == hashlib.sha256(b"".join(parts)).hexdigest()
    assert seen["facts"] == (None, True)


async def test_read_exactly_splits_and_joins_chunks() -> None:
    results: list[bytes] = []

    async def reader(request: Request, reply: Reply) -> None:
        results.append(await request.read_exactly(3))
        results.append(await request.read_exactly(0))
        results.append(await request.read_exactly(9))
        results.append(await request.read_all(100))
        reply.respond(204, [], b"")

    async with serving(reader) as server, raw_client(server.port) as client:
        client.send(get("/", "Transfer-Encoding: chunked").replace(b"GET", b"PUT"))
        for part in (b"ab", b"cdef", b"ghijk", b"lmn"):
            client.send(b"%x\r\n%s\r\n" % (len(part), part))
        client.send(b"0\r\n\r\n")
        assert (await client.response()).status == 204
    assert results == [b"abc", b"", b"defghijkl", b"mn"]


# --- connection reuse -------------------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_socket() -> None:
    async with serving(hello) as server, raw_client(server.port) as client:
        for number in range(4):
            client.send(get(f"/{number}"))
            response = await client.response()
            assert response.body == f"hello /{number}".encode()
            assert "connection" not in response.names()


async def test_aiohttp_reuses_the_connection() -> None:
    created: list[object] = []
    reused: list[object] = []

    async def on_create(session: object, context: object, params: object) -> None:
        created.append(params)

    async def on_reuse(session: object, context: object, params: object) -> None:
        reused.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    trace.on_connection_reuseconn.append(on_reuse)
    async with serving(hello) as server:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
            for _ in range(5):
                async with session.get(f"http://127.0.0.1:{server.port}/x") as response:
                    assert await response.read() == b"hello /x"
    assert (len(created), len(reused)) == (1, 4)


async def test_pipelined_requests_are_answered_in_order_one_handler_at_a_time() -> None:
    events: list[str] = []
    running = 0

    async def ordered(request: Request, reply: Reply) -> None:
        nonlocal running
        running += 1
        assert running == 1
        events.append(f"start {request.raw_path}")
        for _ in range(int(request.raw_path[1:]) % 3):
            await asyncio.sleep(0)  # let the others try to overtake
        body = await request.read_all(100)
        events.append(f"end {request.raw_path}")
        running -= 1
        reply.respond(200, [], request.raw_path.encode() + b":" + body)

    count = 40  # more than the queue bound, so reading pauses and resumes
    wire = b"".join(post(f"/{n}", b"b%d" % n) if n % 2 else get(f"/{n}") for n in range(count))
    async with serving(ordered) as server, raw_client(server.port) as client:
        client.send(wire)
        bodies = [(await client.response()).body for _ in range(count)]
    assert bodies == [(f"/{n}:b{n}" if n % 2 else f"/{n}:").encode() for n in range(count)]
    assert events == [f"{kind} /{n}" for n in range(count) for kind in ("start", "end")]


async def test_pipelined_requests_wait_in_a_bounded_queue() -> None:
    queued: list[int] = []

    async def sample(request: Request, reply: Reply) -> None:
        queued.append(len(request._conn._queue))
        reply.respond(200, [], b"")

    count = 2000
    async with serving(sample) as server, raw_client(server.port) as client:
        client.send(b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % n for n in range(count)))
        for _ in range(count):
            assert (await client.response()).status == 200
    # Reading pauses beyond 16 queued; one parsed slice of the socket read may overshoot.
    assert max(queued) <= 16 + 4096 // len(b"GET /0 HTTP/1.1\r\n\r\n")


async def test_reading_pauses_while_the_queue_is_full() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    blocked: list[Request] = []

    async def gated(request: Request, reply: Reply) -> None:
        if request.raw_path == "/block":
            blocked.append(request)
            entered.set()
            await release.wait()
        reply.respond(200, [], request.raw_path.encode())

    batch = b"".join(get(f"/q{n}") for n in range(29))
    async with (
        serving(gated) as server,
        raw_client(server.port) as client,
        raw_client(server.port) as other,
    ):
        client.send(get("/block") + batch)
        async with asyncio.timeout(WAIT):
            await entered.wait()
        client.send(batch)
        # A round trip on another connection: had reading not paused, the loop would have
        # read the second batch (already in the socket buffer) by the time it completes.
        other.send(get("/ping"))
        assert (await other.response()).body == b"/ping"
        assert len(blocked[0]._conn._queue) == 29
        release.set()
        paths = [(await client.response()).body for _ in range(59)]
    assert paths == [b"/block"] + [f"/q{n}".encode() for n in range(29)] * 2


async def test_connection_close_request_gets_close_and_eof() -> None:
    async with serving(hello) as server, raw_client(server.port) as client:
        client.send(get("/", "Connection: close") + get("/ignored"))
        response = await client.response()
        assert response.header("Connection") == "close"
        assert response.body == b"hello /"
        assert await client.closed_by_server()


async def test_http10_is_close_delimited_unless_keep_alive() -> None:
    async with serving(echo) as server, raw_client(server.port) as client:
        client.send(b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
        response = await client.response()
        assert response.header("Connection") == "close"
        assert response.header("Transfer-Encoding") is None
        assert response.header("Content-Length") is None
        assert response.body == b"hello"  # read until EOF: the server closed

    async with serving(hello) as server, raw_client(server.port) as client:
        for number in range(2):
            client.send(get(f"/{number}", "Connection: keep-alive", version="1.0"))
            response = await client.response()
            assert response.header("Connection") == "keep-alive"
            assert response.body == f"hello /{number}".encode()
        client.send(get("/last", version="1.0"))
        response = await client.response()
        assert response.header("Connection") == "close"
        assert await client.closed_by_server()


# --- response framing -------------------------------------------------------------------


async def test_head_response_keeps_content_length_and_sends_no_body() -> None:
    async def sized(request: Request, reply: Reply) -> None:
        if request.raw_path == "/respond":
            reply.respond(200, [("Content-Length", "999")], b"hello world")
            return
        reply.start(200, [("Content-Length", "11")])
        await reply.write(b"hello world")
        reply.finish()

    async with serving(sized) as server, raw_client(server.port) as client:
        for path in ("/start", "/respond"):
            client.send(get(path).replace(b"GET", b"HEAD"))
            response = await client.response(head_request=True)
            assert response.header("Content-Length") == "11"
            assert response.header("Transfer-Encoding") is None
        # Had any body byte been sent, it would stand where this response starts.
        client.send(get("/respond"))
        assert (await client.response()).body == b"hello world"


async def test_204_and_304_have_no_body_and_no_chunking() -> None:
    async def bodiless(request: Request, reply: Reply) -> None:
        status = int(request.raw_path[1:])
        reply.start(status, [("Content-Length", "7"), ("ETag", '"x"')])
        await reply.write(b"ignored")
        reply.finish()

    async with serving(bodiless) as server, raw_client(server.port) as client:
        client.send(get("/204"))
        response = await client.response()
        assert (response.status, response.reason) == (204, "No Content")
        assert "content-length" not in response.names()
        assert "transfer-encoding" not in response.names()
        client.send(get("/304"))
        response = await client.response()
        assert response.status == 304
        assert response.header("Content-Length") == "7"
        assert "transfer-encoding" not in response.names()
        client.send(get("/204"))
        assert (await client.response()).status == 204  # nothing stray in between


async def test_chunked_response_framing_on_the_wire() -> None:
    big = os.urandom(40_000)

    async def chunks(request: Request, reply: Reply) -> None:
        reply.start(201, [("X-Kind", "chunks")], reason="Made")
        for part in (b"hello", b"", b"world", big):
            await reply.write(part)
        reply.finish()

    async with serving(chunks) as server, raw_client(server.port) as client:
        client.send(get())
        response = await client.response()
    assert (response.status, response.reason) == (201, "Made")
    assert response.head.startswith(b"HTTP/1.1 201 Made\r\nX-Kind: chunks\r\n")
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.framing == (
        b"5\r\nhello\r\n5\r\nworld\r\n" + b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    )


async def test_caller_framing_headers_are_replaced_by_the_servers() -> None:
    async def meddling(request: Request, reply: Reply) -> None:
        reply.start(
            200,
            [
                ("Transfer-Encoding", "gzip"),
                ("Connection", "upgrade"),
                ("Keep-Alive", "timeout=5"),
                ("X-Kept", "yes"),
            ],
        )
        await reply.write(b"body")
        reply.finish()

    async with serving(meddling) as server, raw_client(server.port) as client:
        client.send(get())
        response = await client.response()
    assert response.names() == ["x-kept", "transfer-encoding", "date"]
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.body == b"body"


async def test_short_body_for_declared_length_aborts_the_connection() -> None:
    outcomes: list[str] = []

    async def short(request: Request, reply: Reply) -> None:
        reply.start(200, [("Content-Length", "10")])
        await reply.write(b"1234")
        if request.raw_path == "/finish":
            reply.finish()
        outcomes.append("returned")

    for path in ("/finish", "/return"):
        async with serving(short) as server, raw_client(server.port) as client:
            client.send(get(path))
            head = await client.read_head()
            assert head.header("Content-Length") == "10"
            with pytest.raises(asyncio.IncompleteReadError):
                await client.read_exactly(10)
    assert outcomes == ["returned", "returned"]


async def test_body_longer_than_declared_length_is_refused() -> None:
    errors: list[str] = []

    async def long(request: Request, reply: Reply) -> None:
        reply.start(200, [("Content-Length", "4")])
        await reply.write(b"12")
        try:
            await reply.write(b"345")
        except ValueError as error:
            errors.append(str(error))
        await reply.write(b"34")
        reply.finish()

    async with serving(long) as server, raw_client(server.port) as client:
        client.send(get() + get())
        assert (await client.response()).body == b"1234"
        assert (await client.response()).body == b"1234"
    assert errors == ["body longer than the declared Content-Length"] * 2


class CountingTransport(asyncio.Transport):
    """Wraps a transport, counting write calls (the test observes, nothing else)."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        self.inner.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.writes += 1
        self.inner.writelines(list_of_data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()


async def test_small_responses_leave_in_one_write() -> None:
    counts: dict[str, int] = {}

    async def counted(request: Request, reply: Reply) -> None:
        conn = reply._conn
        real = conn.transport
        counting = CountingTransport(real)
        conn.transport = counting
        try:
            if request.raw_path == "/respond":
                reply.respond(200, [("X-A", "1")], b"x" * 1000)
            elif request.raw_path == "/length":
                reply.start(200, [("Content-Length", "5")])
                await reply.write(b"hello")
                reply.finish()
            else:
                reply.start(200, [])
                reply.finish()
        finally:
            conn.transport = real
        counts[request.raw_path] = counting.writes

    async with serving(counted) as server, raw_client(server.port) as client:
        for path in ("/respond", "/length", "/empty"):
            client.send(get(path))
            await client.response()
    assert counts == {"/respond": 1, "/length": 1, "/empty": 1}


async def test_date_header_is_added_unless_given() -> None:
    async def dated(request: Request, reply: Reply) -> None:
        given = [("Date", "Tue, 01 Jan 2030 00:00:00 GMT")] if request.raw_path == "/own" else []
        reply.respond(200, given, b"")

    async with serving(dated) as server, raw_client(server.port) as client:
        client.send(get("/"))
        date = (await client.response()).header("Date")
        assert date is not None
        assert date.endswith(" GMT")
        assert len(date) == len("Tue, 01 Jan 2030 00:00:00 GMT")
        client.send(get("/own"))
        response = await client.response()
    assert [value for key, value in response.headers if key == "Date"] == [
        "Tue, 01 Jan 2030 00:00:00 GMT"
    ]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("X-Injected", "a\r\nSet-Cookie: stolen=1")], None),
        ([("X-Injected", "a\nb")], None),
        ([("X-Nul", "a\x00b")], None),
        ([("X-Bad\r\nName", "a")], None),
        ([("X Bad", "a")], None),
        ([("Content-Length", "12x")], None),
        ([("X-Wide", "caf\u20ac")], None),
        ([], "OK\r\nX-Injected: 1"),
    ],
)
async def test_unsafe_response_head_raises_and_writes_nothing(
    headers: list[tuple[str, str]], reason: str | None
) -> None:
    raised: list[bool] = []

    async def unsafe(request: Request, reply: Reply) -> None:
        try:
            reply.start(200, headers, reason)
        except ValueError as error:
            raised.append("stolen" not in str(error) and not reply.started)
        reply.respond(200, [], b"clean")

    async with serving(unsafe) as server, raw_client(server.port) as client:
        client.send(get())
        response = await client.response()
    assert raised == [True]
    assert (response.status, response.reason, response.body) == (200, "OK", b"clean")
    assert all(key.lower() not in ("x-injected", "set-cookie") for key, _ in response.headers)


async def test_unknown_status_reason() -> None:
    async def odd(request: Request, reply: Reply) -> None:
        reply.respond(299, [], b"")

    async with serving(odd) as server, raw_client(server.port) as client:
        client.send(get())
        response = await client.response()
    assert (response.status, response.reason) == (299, "Unknown")


# --- listening --------------------------------------------------------------------------


async def test_reuse_port_lets_two_servers_share_a_port() -> None:
    first = HttpServer(hello)
    second = HttpServer(hello)
    await first.start("127.0.0.1", 0, reuse_port=True)
    try:
        await second.start("127.0.0.1", first.port, reuse_port=True)
        assert second.port == first.port
        async with raw_client(first.port) as client:
            client.send(get("/shared"))
            assert (await client.response()).body == b"hello /shared"
    finally:
        await second.close()
        await first.close()


async def test_without_reuse_port_the_port_is_taken() -> None:
    first = HttpServer(hello)
    await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="in use"):
            await HttpServer(hello).start("127.0.0.1", first.port)
    finally:
        await first.close()


async def test_start_on_an_already_bound_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = HttpServer(hello)
    await server.start_on_socket(sock)
    try:
        assert server.port == sock.getsockname()[1]
        async with raw_client(server.port) as client:
            client.send(get("/sock"))
            assert (await client.response()).body == b"hello /sock"
    finally:
        await server.close()


# --- headers ----------------------------------------------------------------------------


def test_headers_lookups_are_case_insensitive_and_first_wins() -> None:
    headers = Headers([("X-A", "1"), ("Content-Type", "text/plain"), ("x-a", "2")])
    assert headers.get("x-a") == "1"
    assert headers.get("X-MISSING") is None
    assert headers.get("X-MISSING", "d") == "d"
    assert headers.getall("X-A") == ["1", "2"]
    assert headers.getall("nope") == []
    assert "CONTENT-type" in headers
    not_a_name: object = 3
    assert not_a_name not in headers
    assert headers["content-type"] == "text/plain"
    with pytest.raises(KeyError):
        headers["nope"]
    assert len(headers) == 2
    assert sorted(headers) == ["content-type", "x-a"]
    assert headers.items() == [("X-A", "1"), ("Content-Type", "text/plain"), ("x-a", "2")]
    assert "text/plain" not in repr(headers)


async def test_inbound_header_values_are_trimmed_and_latin1_decoded() -> None:
    seen: list[object] = []

    async def record(request: Request, reply: Reply) -> None:
        seen.append(request.headers.items())
        reply.respond(204, [], b"")

    async with serving(record) as server, raw_client(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nX-Pad:   v a l  \t\r\nX-Latin: caf\xe9\r\nX-Empty:\r\n\r\n")
        assert (await client.response()).status == 204
    assert seen == [[("X-Pad", "v a l"), ("X-Latin", "caf\u00e9"), ("X-Empty", "")]]
