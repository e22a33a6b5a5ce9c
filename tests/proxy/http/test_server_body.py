"""The HTTP/1.1 server: request bodies: 100-continue, unread bodies, limits, flow control."""

from __future__ import annotations

import asyncio
import hashlib
import os

from proxy.http.server import (
    BodyIncomplete,
    BodyTooLarge,
    Reply,
    Request,
    ServerLimits,
)
from tests.proxy.http.test_server_support import (
    WAIT,
    chunked,
    get,
    raw_client,
    serving,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
KIB = 1024


def head(length: int | None, *extra: str, method: str = "POST") -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [f"{method} / HTTP/1.1", "Host: test", framing, *extra, "", ""]
    return "\r\n".join(lines).encode()


async def read_body(request: Request, reply: Reply) -> None:
    reply.respond(200, [], await request.read_all(1024 * KIB))


async def ignore_body(request: Request, reply: Reply) -> None:
    reply.respond(202, [], b"not read")


# --- Expect: 100-continue ---------------------------------------------------------------


async def test_100_continue_is_sent_when_the_handler_reads_the_body() -> None:
    async with serving(read_body) as server, raw_client(server.port) as client:
        client.send(head(5, "Expect: 100-continue"))
        assert await client.read_exactly(len(CONTINUE)) == CONTINUE
        client.send(b"hello")
        response = await client.response()
        assert (response.status, response.body) == (200, b"hello")
        assert response.header("Connection") is None


async def test_100_continue_is_not_sent_when_the_handler_answers_without_reading() -> None:
    async with serving(ignore_body) as server, raw_client(server.port) as client:
        client.send(head(5, "Expect: 100-continue"))
        response = await client.read_head()
        assert response.status == 202  # the first bytes are the final answer, no 100
        assert response.header("Connection") == "close"
        assert await client.read_exactly(8) == b"not read"
        assert await client.closed_by_server()


async def test_body_over_the_readers_limit_is_refused_before_100_continue() -> None:
    async def small(request: Request, reply: Reply) -> None:
        try:
            await request.read_all(4)
        except BodyTooLarge:
            reply.respond(413, [], b"too big")

    async with serving(small) as server, raw_client(server.port) as client:
        client.send(head(5, "Expect: 100-continue"))
        response = await client.read_head()
        assert response.status == 413
        assert response.header("Connection") == "close"


# --- unread bodies ----------------------------------------------------------------------


async def test_small_unread_body_is_drained_and_the_connection_reused() -> None:
    async with serving(ignore_body) as server, raw_client(server.port) as client:
        # Body in hand when the handler answers.
        client.send(head(1000) + b"x" * 1000)
        response = await client.response()
        assert (response.status, response.header("Connection")) == (202, None)
        # Body still on its way when the handler answers: it is read and dropped.
        client.send(head(50 * KIB))
        response = await client.response()
        assert (response.status, response.header("Connection")) == (202, None)
        client.send(b"y" * 50 * KIB + get("/next"))
        assert (await client.response()).body == b"not read"


async def test_partly_read_chunked_body_with_a_small_rest_is_drained() -> None:
    async def first_byte(request: Request, reply: Reply) -> None:
        reply.respond(200, [], await request.read_exactly(1))

    async with serving(first_byte) as server, raw_client(server.port) as client:
        client.send(head(None) + b"3\r\nabc\r\n")
        response = await client.response()
        assert (response.body, response.header("Connection")) == (b"a", None)
        client.send(b"a\r\n0123456789\r\n0\r\n\r\n" + head(2) + b"zz")
        assert (await client.response()).body == b"z"


async def test_big_unread_body_closes_the_connection() -> None:
    async with serving(ignore_body) as server, raw_client(server.port) as client:
        client.send(head(10 * 1024 * KIB) + b"x" * 1000)
        response = await client.response()
        assert response.header("Connection") == "close"
        assert await client.closed_by_server()


async def test_unread_chunked_body_closes_the_connection() -> None:
    async with serving(ignore_body) as server, raw_client(server.port) as client:
        client.send(head(None) + b"3\r\nabc\r\n")
        response = await client.response()
        assert response.header("Connection") == "close"
        assert await client.closed_by_server()


async def test_discarding_stops_when_the_rest_turns_out_big() -> None:
    async def first_byte(request: Request, reply: Reply) -> None:
        reply.respond(200, [], await request.read_exactly(1))

    async with serving(first_byte) as server, raw_client(server.port) as client:
        client.send(head(None) + b"3\r\nabc\r\n")
        response = await client.response()
        assert response.header("Connection") is None
        big = os.urandom(100 * KIB)
        client.send(chunked(big) + get("/never"))
        assert await client.closed_by_server()


# --- limits and broken bodies -----------------------------------------------------------


async def test_read_all_over_limit_raises_body_too_large() -> None:
    outcomes: list[str] = []

    async def limited(request: Request, reply: Reply) -> None:
        try:
            await request.read_all(10)
        except BodyTooLarge as error:
            outcomes.append(f"{error.limit}")
            raise

    async with serving(limited) as server, raw_client(server.port) as client:
        client.send(head(None) + chunked(b"12345", b"678901"))
        response = await client.response()
        assert response.status == 413
        assert response.header("Content-Type") == "application/json"
        client.send(head(11) + b"x" * 11)
        assert (await client.response()).status == 413
    assert outcomes == ["10", "10"]


async def test_readers_raise_body_incomplete_when_the_client_leaves_mid_body() -> None:
    outcomes: list[str] = []
    done = asyncio.Event()

    async def reading(request: Request, reply: Reply) -> None:
        try:
            if request.content_length is None:
                async for _ in request.iter_chunks():
                    pass
            else:
                await request.read_exactly(request.content_length)
        except BodyIncomplete:
            outcomes.append(f"incomplete {request.content_length}")
        outcomes.append(f"disconnected {reply.disconnected}")
        if len(outcomes) == 4:
            done.set()

    async with serving(reading) as server:
        for wire in (head(1000) + b"x" * 10, head(None) + b"5\r\nabc"):
            async with raw_client(server.port) as client:
                client.send(wire)
                await client.writer.drain()
        async with asyncio.timeout(WAIT):
            await done.wait()
    assert sorted(outcomes) == [
        "disconnected True",
        "disconnected True",
        "incomplete 1000",
        "incomplete None",
    ]


async def test_broken_chunk_framing_fails_the_reader_then_400_and_close() -> None:
    async with serving(read_body) as server, raw_client(server.port) as client:
        client.send(head(None) + b"3\r\nabc\r\nZZ\r\n")
        response = await client.response()
        assert response.status == 400
        assert response.header("Connection") == "close"
        assert b"bad_request" in response.body
        assert await client.closed_by_server()


# --- flow control -----------------------------------------------------------------------


async def test_a_slowly_read_upload_keeps_the_buffer_bounded() -> None:
    high_water = 64 * KIB
    payload = os.urandom(32 * 1024 * KIB)
    buffered: list[int] = []
    paused: list[bool] = []

    async def slow(request: Request, reply: Reply) -> None:
        conn = request._conn
        digest = hashlib.sha256()
        left = request.content_length or 0
        while left:
            piece = await request.read_exactly(min(16 * KIB, left))
            left -= len(piece)
            digest.update(piece)
            buffered.append(conn.buffered)
            paused.append(conn.reading_paused)
            await asyncio.sleep(0)  # one small piece per loop turn: slower than the socket
        reply.respond(200, [], digest.hexdigest().encode())

    async with (
        serving(slow, ServerLimits(high_water=high_water)) as server,
        raw_client(server.port) as client,
    ):
        client.send(head(len(payload)) + payload)
        response = await client.response()
    assert response.body == hashlib.sha256(payload).hexdigest().encode()
    assert any(paused)
    # At most one socket read lands beyond the high-water mark before reading pauses.
    assert max(buffered) <= high_water + 256 * KIB
