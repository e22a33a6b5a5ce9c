"""Misbehaving upstreams and time limits: what the client raises, and when."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.http.client import (
    ClientLimits,
    ConnectionDropped,
    HttpClient,
    PoolStats,
    ResponseInvalid,
)
from tests.proxy.http.test_client_support import (
    RawServer,
    client,
    keep_alive,
    ok,
    read_head,
    read_request,
)

__all__ = ["client"]  # the fixture, imported for pytest


def _answer(*writes: bytes, then_close: bool = True) -> RawServer:
    """Read the request head, write each piece (draining between), then close or stall."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for piece in writes:
            writer.write(piece)
            await writer.drain()
        if then_close:
            writer.close()
        else:
            await asyncio.Event().wait()

    return RawServer(handle)


class NeverResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _request_and_read(http: HttpClient, url: str) -> bytes:
    response = await http.request("GET", url, [])
    return await response.read()


# -- broken bodies --------------------------------------------------------------------------


async def test_close_mid_body_raises_after_the_bytes_that_came(client: HttpClient) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    async with _answer(head, b"0123456789") as server:
        response = await client.request("GET", server.url(), [])
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"0123456789"
        with pytest.raises(ConnectionDropped):
            await anext(chunks)
        assert not response.complete
    assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)


async def test_reset_mid_chunked_body_raises(client: HttpClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")
        await writer.drain()
        writer.transport.abort()

    async with RawServer(handle) as server:
        response = await client.request("GET", server.url(), [])
        with pytest.raises(ConnectionDropped):
            await response.read()
    assert client.stats().in_use == 0


async def test_close_before_any_answer_is_connection_dropped(client: HttpClient) -> None:
    async with _answer() as server:
        with pytest.raises(ConnectionDropped):
            await client.request("GET", server.url(), [])
    assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)


async def test_close_inside_the_head_is_connection_dropped(client: HttpClient) -> None:
    async with _answer(b"HTTP/1.1 200 OK\r\nContent-Le") as server:
        with pytest.raises(ConnectionDropped):
            await client.request("GET", server.url(), [])


# -- interim and odd heads ------------------------------------------------------------------


async def test_interim_responses_are_skipped(client: HttpClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_head(reader)) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            writer.write(ok(request.target.encode(), "X-Final: yes"))

    async with RawServer(handle) as server:
        for target in ("/one", "/two"):
            response = await client.request("GET", server.url(target), [])
            assert (response.status, response.reason) == (200, "OK")
            assert response.raw_headers == [(b"Content-Length", b"4"), (b"X-Final", b"yes")]
            assert await response.read() == target.encode()
    assert server.accepted == 1


async def test_switching_protocols_is_refused(client: HttpClient) -> None:
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    async with _answer(upgrade, b"\x81\x05hello", then_close=False) as server:
        with pytest.raises(ResponseInvalid, match="101"):
            await client.request("GET", server.url(), [])
    assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HELLO THERE\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_response_is_response_invalid(client: HttpClient, reply: bytes) -> None:
    async with _answer(reply, then_close=False) as server:
        with pytest.raises(ResponseInvalid):
            await _request_and_read(client, server.url())
    assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)


async def test_head_larger_than_the_limit_in_one_piece(client: HttpClient) -> None:
    reply = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
    async with _answer(reply, then_close=False) as server:
        with pytest.raises(ResponseInvalid, match="too large"):
            await client.request("GET", server.url(), [])


async def test_head_that_never_ends_is_cut_off(client: HttpClient) -> None:
    # One header value growing forever: refused once max_head_bytes have come in.
    pieces = [b"HTTP/1.1 200 OK\r\nX-Endless: "] + [b"b" * 16_384] * 64
    async with _answer(*pieces, then_close=False) as server:
        with pytest.raises(ResponseInvalid, match="too large"):
            await client.request("GET", server.url(), [])


async def test_many_headers_within_the_limit_are_fine(client: HttpClient) -> None:
    lines = [f"X-H{n}: {'v' * 50}" for n in range(500)]  # about 30 KiB
    async with RawServer(keep_alive(lambda _: ok(b"fine", *lines))) as server:
        response = await client.request("GET", server.url(), [])
        assert len(response.raw_headers) == 501
        assert await response.read() == b"fine"


async def test_chunked_trailers_count_against_the_head_limit() -> None:
    http = HttpClient(ClientLimits(max_head_bytes=1024))
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"
        + b"".join(b"X-T%d: %s\r\n" % (n, b"t" * 100) for n in range(20))
        + b"\r\n"
    )
    try:
        async with _answer(reply, then_close=False) as server:
            response = await http.request("GET", server.url(), [])
            with pytest.raises(ResponseInvalid):
                await response.read()
    finally:
        await http.close()


# -- an answer before the upload ends -------------------------------------------------------


async def test_early_answer_during_upload_is_returned_and_not_reused(client: HttpClient) -> None:
    produced = 0
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        try:
            while True:
                produced += 1
                assert produced < 1000, "the upload went on after the answer"
                yield b"u" * 65536
        finally:
            closed.set()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_head(reader)
        assert request is not None
        if request.method == "PUT":
            writer.write(ok(b"too large", "X-Reason: 413").replace(b"200 OK", b"413 Too Big"))
            await asyncio.Event().wait()  # never reads the body
        writer.write(ok(b"new connection"))
        await writer.drain()

    async with RawServer(refuse) as server:
        response = await client.request("PUT", server.url(), [], endless())
        assert response.status == 413
        assert await response.read() == b"too large"
        assert closed.is_set()
        assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)
        follow_up = await client.request("GET", server.url(), [])
        assert await follow_up.read() == b"new connection"
    assert server.accepted == 2


# -- time limits ---------------------------------------------------------------------------


async def test_read_timeout_while_waiting_for_the_head() -> None:
    http = HttpClient(ClientLimits(read_timeout=0.1))
    try:
        async with _answer(then_close=False) as server:
            with pytest.raises(TimeoutError):
                await http.request("GET", server.url(), [])
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
    finally:
        await http.close()


async def test_read_timeout_mid_body() -> None:
    http = HttpClient(ClientLimits(read_timeout=0.1))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    try:
        async with _answer(head, b"12345", then_close=False) as server:
            response = await http.request("GET", server.url(), [])
            chunks = response.iter_chunks()
            assert await anext(chunks) == b"12345"
            with pytest.raises(TimeoutError):
                await anext(chunks)
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
    finally:
        await http.close()


async def test_read_timeout_is_a_silence_limit_not_a_total() -> None:
    # The head trickles in over about 0.6 s with gaps of 0.1 s; a 0.3 s silence limit
    # must not fire. (The server's pauses pace it; nothing waits on them.)
    http = HttpClient(ClientLimits(read_timeout=0.3))

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for piece in (b"HTTP/1.1 200 OK\r\n", b"A: 1\r\n", b"B: 2\r\n", b"C: 3\r\n", b"D: 4\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.12)
        writer.write(b"Content-Length: 2\r\n\r\nok")

    try:
        async with RawServer(trickle) as server:
            response = await http.request("GET", server.url(), [])
            assert await response.read() == b"ok"
    finally:
        await http.close()


async def test_deadline_bounds_waiting_for_the_head() -> None:
    http = HttpClient(ClientLimits(read_timeout=60))
    loop = asyncio.get_running_loop()
    try:
        async with _answer(then_close=False) as server:
            started = loop.time()
            with pytest.raises(TimeoutError):
                await http.request("GET", server.url(), [], deadline=started + 0.1)
            assert loop.time() - started < 5
    finally:
        await http.close()


async def test_deadline_does_not_bound_the_body() -> None:
    http = HttpClient()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.1
    past_deadline = asyncio.Event()
    loop.call_at(deadline + 0.05, past_deadline.set)

    async def late_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
        await past_deadline.wait()
        writer.write(b"body-late")
        await asyncio.Event().wait()

    try:
        async with RawServer(late_body) as server:
            response = await http.request("GET", server.url(), [], deadline=deadline)
            assert await response.read() == b"body-late"
            assert loop.time() > deadline
    finally:
        await http.close()


async def test_a_deadline_already_passed_sends_nothing(client: HttpClient) -> None:
    seen: list[str] = []
    ended = asyncio.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await read_request(reader)) is not None:
                seen.append(request.target)
                writer.write(ok())
        finally:
            ended.set()

    async with RawServer(record) as server:
        await (await client.request("GET", server.url("/first"), [])).read()
        past = asyncio.get_running_loop().time() - 1
        with pytest.raises(TimeoutError):
            await client.request("GET", server.url("/late"), [], deadline=past)
        client_conn_count = server.accepted
        await client.close()  # the pooled connection ends: the server has read everything
        async with asyncio.timeout(10):
            await ended.wait()
    assert client_conn_count == 1
    assert seen == ["/first"]


async def test_deadline_bounds_resolving() -> None:
    http = HttpClient(resolver=NeverResolver())
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 0.1
        with pytest.raises(TimeoutError):
            await http.request("GET", "http://slow-dns.test/", [], deadline=deadline)
        assert loop.time() - deadline < 2  # not the 10 s connect_timeout
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
    finally:
        await http.close()


async def test_connect_timeout_bounds_resolving_and_connecting() -> None:
    http = HttpClient(ClientLimits(connect_timeout=0.1), resolver=NeverResolver())
    try:
        with pytest.raises(TimeoutError):
            await http.request("GET", "http://slow-dns.test/", [])
    finally:
        await http.close()


async def test_upload_stalled_by_the_peer_times_out() -> None:
    # The server never reads: once the socket buffers fill, the upload waits on the
    # transport, and read_timeout bounds that wait too.
    http = HttpClient(ClientLimits(read_timeout=0.2))

    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield b"s" * 65536

    try:
        async with _answer(then_close=False) as server:
            with pytest.raises(TimeoutError):
                await http.request("PUT", server.url(), [], forever())
    finally:
        await http.close()


async def test_server_that_reads_the_request_then_drops_fresh_connection(
    client: HttpClient,
) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with RawServer(drop) as server:
        with pytest.raises(ConnectionDropped):
            await client.request("POST", server.url(), [], b"x")
