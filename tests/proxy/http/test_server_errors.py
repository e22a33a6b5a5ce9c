"""The HTTP/1.1 server: malformed requests, limits, timeouts, handler failures, disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from proxy.http.server import ClientDisconnected, Reply, Request, ServerLimits
from tests.proxy.http.test_server_support import (
    WAIT,
    RawClient,
    RawResponse,
    get,
    hello,
    raw_client,
    serving,
)


def error_of(response: RawResponse) -> tuple[int, str]:
    assert response.header("Content-Type") == "application/json"
    assert response.header("Connection") == "close"
    return response.status, json.loads(response.body)["error"]["code"]


async def refused(wire: bytes, limits: ServerLimits | None = None) -> tuple[int, str]:
    """Send wire bytes, return the (status, code) of the error, check the close."""
    handled: list[str] = []

    async def record(request: Request, reply: Reply) -> None:
        handled.append(request.raw_path)
        reply.respond(200, [], b"handled")

    async with serving(record, limits) as server, raw_client(server.port) as client:
        client.send(wire)
        response = await client.response()
        assert await client.closed_by_server()
    assert handled == []
    return error_of(response)


# --- malformed requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\nHost: bare-lf\n\n",
        b"GET / HTTP/1.1\r\nHost : space-before-colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: folded\r\n  continuation\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_request_gets_400_json_and_close(wire: bytes) -> None:
    assert await refused(wire) == (400, "bad_request")


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Content-Length: 3\r\nContent-Length: 4\r\n",
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
    ],
)
async def test_ambiguous_body_framing_is_refused(framing: bytes) -> None:
    # Smuggling: a request whose body length two parsers could read differently.
    wire = b"POST / HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n3\r\nabc\r\n0\r\n\r\n"
    assert await refused(wire) == (400, "bad_request")


async def test_transfer_codings_other_than_chunked_are_not_implemented() -> None:
    wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert await refused(wire) == (501, "not_implemented")


async def test_transfer_encoding_in_http10_is_refused() -> None:
    wire = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert await refused(wire) == (400, "bad_request")


async def test_error_after_a_valid_pipelined_request_comes_after_its_answer() -> None:
    async with serving(hello) as server, raw_client(server.port) as client:
        client.send(get("/ok") + b"GARBAGE\r\n\r\n")
        first = await client.response()
        assert (first.status, first.body, first.header("Connection")) == (200, b"hello /ok", None)
        assert error_of(await client.response()) == (400, "bad_request")
        assert await client.closed_by_server()


async def test_error_body_renderer_can_be_replaced() -> None:
    def plain(status: int, code: str, message: str) -> tuple[list[tuple[str, str]], bytes]:
        return [("Content-Type", "text/plain")], f"{status} {code}: {message}".encode()

    async with serving(hello, error_body=plain) as server, raw_client(server.port) as client:
        client.send(b"BROKEN\r\n\r\n")
        response = await client.response()
    assert response.header("Content-Type") == "text/plain"
    assert response.body == b"400 bad_request: malformed HTTP request"


async def test_error_responses_do_not_echo_the_request() -> None:
    async with serving(hello) as server, raw_client(server.port) as client:
        client.send(b"GET /?token=s3cr3t-value HTTP/1.1\r\nAuthorization: Bearer s3cr3t\r\n\x01")
        response = await client.response()
    assert response.status == 400
    assert b"s3cr3t" not in response.head + response.body


# --- limits -----------------------------------------------------------------------------


async def test_request_target_over_the_limit_is_414() -> None:
    limits = ServerLimits(max_request_line=100)
    assert await refused(get("/" + "a" * 100), limits) == (414, "uri_too_long")
    async with serving(hello, limits) as server, raw_client(server.port) as client:
        client.send(get("/" + "a" * 99))  # exactly at the limit
        assert (await client.response()).status == 200


async def test_request_target_limit_counts_across_reads() -> None:
    entered = asyncio.Event()

    async def first(request: Request, reply: Reply) -> None:
        entered.set()
        reply.respond(200, [], b"first")

    limits = ServerLimits(max_request_line=100)
    async with serving(first, limits) as server, raw_client(server.port) as client:
        client.send(get("/first") + b"GET /" + b"a" * 60)
        async with asyncio.timeout(WAIT):
            await entered.wait()  # the server has read the first part
        client.send(b"a" * 60 + b" HTTP/1.1\r\n\r\n")
        assert (await client.response()).body == b"first"
        assert error_of(await client.response()) == (414, "uri_too_long")


async def test_too_many_headers_is_431() -> None:
    limits = ServerLimits(max_headers=10)
    extra = [f"X-H{n}: v" for n in range(10)]  # with Host: 11
    assert await refused(get("/", *extra), limits) == (431, "headers_too_large")
    async with serving(hello, limits) as server, raw_client(server.port) as client:
        client.send(get("/", *extra[:9]))
        assert (await client.response()).status == 200


async def test_head_over_max_head_bytes_is_431() -> None:
    limits = ServerLimits(max_head_bytes=1024)
    assert await refused(get("/", "X-Big: " + "v" * 1100), limits) == (431, "headers_too_large")
    many = [f"X-H{n}: {'v' * 90}" for n in range(12)]
    assert await refused(get("/", *many), limits) == (431, "headers_too_large")


async def test_a_header_trickled_in_over_max_head_bytes_is_431() -> None:
    # The unfinished header is buffered inside the parser: its bytes are counted as they come.
    entered = asyncio.Event()

    async def first(request: Request, reply: Reply) -> None:
        entered.set()
        reply.respond(200, [], b"first")

    limits = ServerLimits(max_head_bytes=1024)
    async with serving(first, limits) as server, raw_client(server.port) as client:
        client.send(get("/first") + b"GET / HTTP/1.1\r\nX-Big: ")
        async with asyncio.timeout(WAIT):
            await entered.wait()
        for _ in range(3):
            client.send(b"v" * 600)
        assert (await client.response()).body == b"first"
        assert error_of(await client.response()) == (431, "headers_too_large")


# --- timeouts ---------------------------------------------------------------------------


async def test_slow_request_head_gets_408_and_close() -> None:
    limits = ServerLimits(header_timeout=0.2)
    async with serving(hello, limits) as server, raw_client(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: slow")
        response = await client.response()
        assert error_of(response) == (408, "request_timeout")
        assert await client.closed_by_server()


async def test_header_timeout_starts_with_the_request_not_the_connection() -> None:
    limits = ServerLimits(header_timeout=0.2, keepalive_timeout=WAIT * 2)
    async with serving(hello, limits) as server, raw_client(server.port) as client:
        client.send(get("/a"))
        assert (await client.response()).status == 200
        client.send(b"GET /b HTTP/1.1\r\n")
        assert error_of(await client.response()) == (408, "request_timeout")


async def test_idle_keep_alive_connection_is_closed_quietly() -> None:
    limits = ServerLimits(keepalive_timeout=0.2)
    async with serving(hello, limits) as server:
        async with raw_client(server.port) as client:
            client.send(get())
            assert (await client.response()).status == 200
            assert await client.closed_by_server()
        async with raw_client(server.port) as silent:
            assert await silent.closed_by_server()


async def test_keep_alive_timeout_counts_from_the_last_response() -> None:
    timeout = 1.0
    loop = asyncio.get_running_loop()
    async with (
        serving(hello, ServerLimits(keepalive_timeout=timeout)) as server,
        raw_client(server.port) as client,
    ):
        client.send(get("/1"))
        assert (await client.response()).status == 200
        await asyncio.sleep(timeout / 4)  # idle for a while, well within the timeout
        client.send(get("/2"))
        assert (await client.response()).status == 200
        answered = loop.time()
        assert await client.closed_by_server()
        assert loop.time() - answered >= timeout - 0.05


# --- handler failures -------------------------------------------------------------------


async def test_handler_exception_before_start_is_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crash(request: Request, reply: Reply) -> None:
        if request.raw_path == "/crash":
            raise RuntimeError("boom")
        reply.respond(200, [], b"fine")

    with caplog.at_level(logging.ERROR, logger="authgate.http"):
        async with serving(crash) as server, raw_client(server.port) as client:
            client.send(get("/crash", "X-Private: do-not-log"))
            response = await client.response()
            assert response.status == 500
            assert json.loads(response.body)["error"]["code"] == "internal_error"
            assert response.header("Connection") is None
            client.send(get("/after"))
            assert (await client.response()).body == b"fine"  # the connection lives on
    records = [r for r in caplog.records if r.name == "authgate.http"]
    assert [r.getMessage() for r in records] == ["request handler failed"]
    assert records[0].exc_info is not None
    assert "do-not-log" not in caplog.text
    assert "/crash" not in caplog.text


async def test_handler_exception_after_start_aborts_the_connection() -> None:
    async def crash(request: Request, reply: Reply) -> None:
        reply.start(200, [])
        await reply.write(b"partial")
        raise RuntimeError("boom")

    async with serving(crash) as server, raw_client(server.port) as client:
        client.send(get())
        head = await client.read_head()
        assert head.header("Transfer-Encoding") == "chunked"
        rest = b""
        with contextlib.suppress(ConnectionResetError):
            rest = await client.rest()
        assert not rest.endswith(b"0\r\n\r\n")


async def test_handler_returning_without_answer_is_500() -> None:
    async def silent(request: Request, reply: Reply) -> None:
        return

    async with serving(silent) as server, raw_client(server.port) as client:
        client.send(get())
        response = await client.response()
    assert (response.status, json.loads(response.body)["error"]["code"]) == (
        500,
        "internal_error",
    )


async def test_handler_returning_after_start_gets_its_response_finished() -> None:
    async def unfinished(request: Request, reply: Reply) -> None:
        reply.start(200, [])
        await reply.write(b"body")

    async with serving(unfinished) as server, raw_client(server.port) as client:
        for _ in range(2):
            client.send(get())
            response = await client.response()
            assert (response.body, response.framing) == (b"body", b"4\r\nbody\r\n0\r\n\r\n")


async def test_client_leaving_mid_response_makes_write_raise_client_disconnected() -> None:
    outcome: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()

    async def endless(request: Request, reply: Reply) -> None:
        reply.start(200, [])
        try:
            for _ in range(100_000):
                await reply.write(b"x" * 65536)
        except ClientDisconnected as error:
            outcome.set_result((isinstance(error, ConnectionResetError), reply.disconnected))
            raise
        outcome.set_result((False, reply.disconnected))

    async with serving(endless) as server:
        client = await RawClient.connect(server.port)
        client.send(get())
        await client.read_head()
        await client.close()
        async with asyncio.timeout(WAIT):
            assert await outcome == (True, True)


async def test_upgrade_request_is_answered_as_bodyless_then_closed() -> None:
    seen: list[tuple[bool, bool]] = []

    async def plain(request: Request, reply: Reply) -> None:
        seen.append((request.body_exists, request.keep_alive))
        reply.respond(200, [], await request.read_all(100))

    async with serving(plain) as server, raw_client(server.port) as client:
        client.send(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 3\r\n\r\nabc" + get("/never")
        )
        response = await client.response()
        assert (response.status, response.body) == (200, b"")
        assert response.header("Connection") == "close"
        assert await client.closed_by_server()
    assert seen == [(False, False)]
