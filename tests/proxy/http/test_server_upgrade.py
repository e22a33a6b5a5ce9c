"""Upgrade requests on the lean server: `Reply.switch_protocols` and the Tunnel.

Pure transport: the handlers here speak a made-up protocol (bytes echoed back), so what
is checked is the server's part only: the 101 head, every byte after the request head
reaching the tunnel (including those that arrived with it), flow control, who closes
what, and that an upgraded connection counts as in flight for drain and is aborted by
close.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from proxy.http.server import ClientDisconnected, Reply, Request, ServerLimits
from tests.proxy.http.test_server_support import WAIT, RawClient, get, raw_client, serving

KIB = 1024
UPGRADE = ("Connection: Upgrade", "Upgrade: echo")


def upgrade_request(path: str = "/tunnel", *extra: str) -> bytes:
    return get(path, *UPGRADE, *extra)


async def echo_tunnel(request: Request, reply: Reply) -> None:
    """Switches to the echo protocol and sends every byte back until the caller closes."""
    tunnel = reply.switch_protocols([("Upgrade", "echo"), ("X-Protocol", "test")])
    while data := await tunnel.read():
        await tunnel.write(data)


async def switched(client: RawClient) -> None:
    response = await client.read_head()
    assert (response.status, response.reason) == (101, "Switching Protocols")
    assert response.header("Upgrade") == "echo"
    assert response.header("Connection") == "Upgrade"


async def test_a_101_head_then_bytes_both_ways() -> None:
    async with serving(echo_tunnel) as server, raw_client(server.port) as client:
        client.send(upgrade_request())
        response = await client.read_head()
        assert (response.status, response.reason) == (101, "Switching Protocols")
        assert response.names() == ["upgrade", "x-protocol", "connection", "date"]
        assert response.header("Connection") == "Upgrade"
        for message in (b"ping", b"x" * 70 * KIB, b"pong"):
            client.send(message)
            assert await client.read_exactly(len(message)) == message


async def test_bytes_sent_with_the_head_reach_the_tunnel_first() -> None:
    async with serving(echo_tunnel) as server, raw_client(server.port) as client:
        client.send(upgrade_request() + b"early bytes")
        await switched(client)
        assert await client.read_exactly(11) == b"early bytes"


async def test_a_large_read_holding_the_head_and_more_loses_nothing() -> None:
    # Reads over 4 KiB outside a body are parsed in slices: the bytes of the slices after
    # the one holding the head must reach the tunnel too.
    payload = os.urandom(200 * KIB)
    async with serving(echo_tunnel) as server, raw_client(server.port) as client:
        client.send(upgrade_request() + payload)
        await switched(client)
        assert await client.read_exactly(len(payload)) == payload


async def test_pipelined_requests_are_answered_before_the_switch() -> None:
    async def route(request: Request, reply: Reply) -> None:
        if request.upgrade:
            await echo_tunnel(request, reply)
        else:
            reply.respond(200, [], b"plain")

    async with serving(route) as server, raw_client(server.port) as client:
        client.send(get("/first") + upgrade_request() + b"after")
        first = await client.response()
        assert (first.status, first.body) == (200, b"plain")
        await switched(client)
        assert await client.read_exactly(5) == b"after"


async def test_a_big_upload_through_a_tunnel_keeps_the_buffer_bounded() -> None:
    high_water = 64 * KIB
    payload = os.urandom(16 * 1024 * KIB)
    buffered: list[int] = []
    paused: list[bool] = []

    async def slow_reader(request: Request, reply: Reply) -> None:
        conn = request._conn
        tunnel = reply.switch_protocols([("Upgrade", "echo")])
        digest = hashlib.sha256()
        left = len(payload)
        while left:
            data = await tunnel.read()
            left -= len(data)
            digest.update(data)
            buffered.append(conn.buffered)
            paused.append(conn.reading_paused)
            await asyncio.sleep(0)  # one read per loop turn: slower than the socket
        await tunnel.write(digest.hexdigest().encode())

    limits = ServerLimits(high_water=high_water)
    async with serving(slow_reader, limits) as server, raw_client(server.port) as client:
        client.send(upgrade_request() + payload)
        await switched(client)
        assert await client.read_exactly(64) == hashlib.sha256(payload).hexdigest().encode()
        assert await client.closed_by_server()
    assert any(paused)
    # At most one socket read lands beyond the high-water mark before reading pauses.
    assert max(buffered) <= high_water + 256 * KIB


async def test_a_big_download_through_a_tunnel_arrives_intact() -> None:
    payload = os.urandom(16 * 1024 * KIB)

    async def sender(request: Request, reply: Reply) -> None:
        tunnel = reply.switch_protocols([("Upgrade", "echo")])
        for start in range(0, len(payload), 256 * KIB):
            await tunnel.write(payload[start : start + 256 * KIB])

    async with serving(sender) as server, raw_client(server.port) as client:
        client.send(upgrade_request())
        await switched(client)
        assert await client.rest() == payload  # then the server closes


async def test_the_connection_closes_after_pending_writes_when_the_handler_returns() -> None:
    async def goodbye(request: Request, reply: Reply) -> None:
        tunnel = reply.switch_protocols([("Upgrade", "echo")])
        await tunnel.write(b"bye")

    async with serving(goodbye) as server, raw_client(server.port) as client:
        client.send(upgrade_request())
        await switched(client)
        assert await client.rest() == b"bye"
        assert server.in_flight == 0


async def test_the_caller_closing_ends_reads_and_fails_writes() -> None:
    outcome: asyncio.Future[tuple[list[bytes], bool]] = asyncio.Future()

    async def watcher(request: Request, reply: Reply) -> None:
        tunnel = reply.switch_protocols([("Upgrade", "echo")])
        received = []
        while data := await tunnel.read():
            received.append(data)
        try:
            await tunnel.write(b"too late")
        except ClientDisconnected:
            outcome.set_result((received, True))
        else:
            outcome.set_result((received, False))

    async with serving(watcher) as server:
        client = await RawClient.connect(server.port)
        client.send(upgrade_request())
        await switched(client)
        client.send(b"last words")
        await client.close()
        async with asyncio.timeout(WAIT):
            received, refused = await outcome
    assert b"".join(received) == b"last words"
    assert refused


async def test_only_an_upgrade_request_may_switch() -> None:
    seen: list[tuple[str, bool, bool]] = []

    async def eager(request: Request, reply: Reply) -> None:
        seen.append((request.method, request.upgrade, request.keep_alive))
        try:
            reply.switch_protocols([("Upgrade", "echo")])
        except RuntimeError:
            reply.respond(200, [], b"refused")

    async with serving(eager) as server:
        for head in (
            get("/plain"),
            get("/no-connection-token", "Upgrade: echo"),
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        ):
            async with raw_client(server.port) as client:
                client.send(head)
                response = await client.response()
                assert (response.status, response.body) == (200, b"refused")
    assert seen == [("GET", False, True), ("GET", False, True), ("CONNECT", False, False)]


async def test_a_tunnel_counts_as_in_flight_and_close_aborts_it() -> None:
    reading = asyncio.Event()
    ended: asyncio.Future[str] = asyncio.Future()

    async def holder(request: Request, reply: Reply) -> None:
        tunnel = reply.switch_protocols([("Upgrade", "echo")])
        reading.set()
        try:
            await tunnel.read()
        except asyncio.CancelledError:
            ended.set_result("cancelled")
            raise
        ended.set_result("read returned")

    async with serving(holder) as server, raw_client(server.port) as client:
        client.send(upgrade_request())
        await switched(client)
        async with asyncio.timeout(WAIT):
            await reading.wait()
        assert server.in_flight == 1
        server.stop_accepting()
        assert not await server.drain(0.05)  # the tunnel holds the drain up...
        await server.close()  # ...but not the close
        assert await client.closed_by_server()
        async with asyncio.timeout(WAIT):
            assert await ended in ("cancelled", "read returned")
        assert server.in_flight == 0


async def test_an_open_tunnel_keeps_working_while_the_server_stops_accepting() -> None:
    async with serving(echo_tunnel) as server, raw_client(server.port) as client:
        client.send(upgrade_request())
        await switched(client)
        server.stop_accepting()
        client.send(b"still here")
        assert await client.read_exactly(10) == b"still here"
        await client.close()
        assert await server.drain(WAIT)


@pytest.mark.parametrize("status", [200, 426])
async def test_an_upgrade_answered_normally_closes_after_the_answer(status: int) -> None:
    async def decline(request: Request, reply: Reply) -> None:
        reply.respond(status, [("Content-Type", "text/plain")], b"no switch")

    async with serving(decline) as server, raw_client(server.port) as client:
        client.send(upgrade_request() + b"not a request" + get("/never"))
        response = await client.response()
        assert (response.status, response.body) == (status, b"no switch")
        assert response.header("Connection") == "close"
        assert await client.closed_by_server()


# --- the same scenarios on uvloop, the loop production runs on ----------------------------

UVLOOP_SCENARIOS = [
    (name, function)
    for name, function in list(globals().items())
    if name.startswith("test_")
    and inspect.iscoroutinefunction(function)
    and not inspect.signature(function).parameters
]


@pytest.mark.parametrize(
    "scenario", [s for _, s in UVLOOP_SCENARIOS], ids=[n for n, _ in UVLOOP_SCENARIOS]
)
def test_on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(scenario())
