"""Connection reuse, the per-host limit, stale connections, resolving and the DNS cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.http.client import (
    ClientError,
    ClientLimits,
    ConnectError,
    ConnectionDropped,
    HttpClient,
    PoolStats,
    SystemResolver,
)
from tests.proxy.http.test_client_support import (
    RawRequest,
    RawServer,
    client,
    keep_alive,
    ok,
    read_request,
)

__all__ = ["client"]  # the fixture, imported for pytest


class CountingResolver:
    """Maps every name to fixed addresses and counts the lookups."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.addresses


class Blocked(Exception):
    """Stands in for the project's SSRF refusal: must reach the caller unchanged."""


class RefusingResolver:
    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls += 1
        raise Blocked(host)


async def _body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- reuse ----------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(client: HttpClient) -> None:
    seen: list[RawRequest] = []
    async with RawServer(keep_alive(lambda r: ok(r.target.encode()), seen)) as server:
        for n in range(5):
            response = await client.request("GET", server.url(f"/{n}"), [])
            assert client.stats() == PoolStats(in_use=1, idle=0, limit=0)
            assert await response.read() == f"/{n}".encode()
            assert client.stats() == PoolStats(in_use=0, idle=1, limit=0)
    assert server.accepted == 1
    assert [r.target for r in seen] == ["/0", "/1", "/2", "/3", "/4"]


@pytest.mark.parametrize(
    "reply",
    [
        ok(b"x", "Connection: close"),
        ok(b"x", "connection: keep-alive, Close"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    ],
)
async def test_no_reuse_when_the_server_says_close(client: HttpClient, reply: bytes) -> None:
    async with RawServer(keep_alive(lambda _: reply)) as server:
        for _ in range(2):
            response = await client.request("GET", server.url(), [])
            assert await response.read() == b"x"
            assert client.stats().idle == 0
    assert server.accepted == 2


async def test_http10_keep_alive_is_reused(client: HttpClient) -> None:
    reply = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"
    async with RawServer(keep_alive(lambda _: reply)) as server:
        for _ in range(2):
            response = await client.request("GET", server.url(), [])
            assert response.version == (1, 0)
            assert await response.read() == b"x"
    assert server.accepted == 1


async def test_unread_body_means_a_new_connection(client: HttpClient) -> None:
    bigger = b"z" * (4 * 1024 * 1024)
    async with RawServer(keep_alive(lambda _: ok(bigger))) as server:
        streaming = await client.request("GET", server.url("/big"), [])
        async for _ in streaming.iter_chunks():
            break
        assert not streaming.complete
        streaming.release()
        streaming.release()  # idempotent
        assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)
        again = await client.request("GET", server.url(), [])
        assert await again.read() == bigger
        assert client.stats() == PoolStats(in_use=0, idle=1, limit=0)
    assert server.accepted == 2


async def test_close_never_pools_the_connection(client: HttpClient) -> None:
    async with RawServer(keep_alive(lambda _: ok())) as server:
        response = await client.request("GET", server.url(), [])
        assert await response.read() == b"ok"  # released to the pool by reading it all
        assert client.stats().idle == 1
        second = await client.request("GET", server.url(), [])
        second.close()
        second.close()
        second.release()  # after close: nothing
        assert client.stats() == PoolStats(in_use=0, idle=0, limit=0)
        await (await client.request("GET", server.url(), [])).read()
    assert server.accepted == 2


async def test_a_pooled_connection_the_server_closed_is_not_handed_out(
    client: HttpClient,
) -> None:
    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await writer.drain()
        writer.close()

    async with RawServer(once_then_close) as server:
        first = await client.request("GET", server.url(), [])
        conn = first._conn
        assert conn is not None
        assert await first.read() == b"first"
        assert client.stats().idle == 1
        await conn.closed_future()
        assert client.stats().idle == 0
        # POST is never retried: it only works if the dead connection was not reused.
        second = await client.request("POST", server.url(), [], b"data")
        assert await second.read() == b"first"
    assert server.accepted == 2


async def test_idle_connections_expire() -> None:
    http = HttpClient(ClientLimits(keepalive_timeout=0))
    try:
        async with RawServer(keep_alive(lambda _: ok())) as server:
            for _ in range(3):
                await (await http.request("GET", server.url(), [])).read()
                assert http.stats().idle == 0
        assert server.accepted == 3
    finally:
        await http.close()


async def test_an_idle_connection_older_than_keepalive_is_not_reused(client: HttpClient) -> None:
    async with RawServer(keep_alive(lambda _: ok())) as server:
        await (await client.request("GET", server.url(), [])).read()
        [pool] = client._pools.values()
        later = asyncio.get_running_loop().time() + ClientLimits().keepalive_timeout + 1
        assert pool.take_idle(later) is None
        assert client.stats().idle == 0
        await (await client.request("GET", server.url(), [])).read()
    assert server.accepted == 2


# -- stale connections ------------------------------------------------------------------------


def _closes_on_second_request(seen: list[str]) -> RawServer:
    """First request of a connection answered, the second read and then dropped unanswered
    (the server's idle timeout firing as the request went out)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await read_request(reader)
        assert first is not None
        seen.append(first.method)
        writer.write(ok(b"answer"))
        await writer.drain()
        second = await read_request(reader)
        if second is not None:
            seen.append(second.method)

    return RawServer(handle)


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PUT", b"same again"), ("DELETE", b""), ("HEAD", None)]
)
async def test_idempotent_request_on_a_stale_connection_is_retried_once(
    client: HttpClient, method: str, body: bytes | None
) -> None:
    seen: list[str] = []
    async with _closes_on_second_request(seen) as server:
        await (await client.request("GET", server.url(), [])).read()
        response = await client.request(method, server.url(), [], body)
        assert response.status == 200
        await response.read()
    assert server.accepted == 2
    assert seen == ["GET", method, method]


async def test_post_on_a_stale_connection_is_not_retried(client: HttpClient) -> None:
    seen: list[str] = []
    async with _closes_on_second_request(seen) as server:
        await (await client.request("GET", server.url(), [])).read()
        with pytest.raises(ConnectionDropped):
            await client.request("POST", server.url(), [], b"once only")
    assert server.accepted == 1
    assert seen == ["GET", "POST"]


async def test_streamed_body_on_a_stale_connection_is_not_retried(client: HttpClient) -> None:
    seen: list[str] = []
    async with _closes_on_second_request(seen) as server:
        await (await client.request("GET", server.url(), [])).read()
        with pytest.raises(ConnectionDropped):
            await client.request("PUT", server.url(), [], _body(b"cannot", b"replay"))
    assert server.accepted == 1


async def test_a_fresh_connection_that_drops_is_not_retried(client: HttpClient) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with RawServer(drop) as server:
        with pytest.raises(ConnectionDropped):
            await client.request("GET", server.url(), [])
    assert server.accepted == 1


async def test_a_stale_connection_that_sent_bytes_is_not_retried(client: HttpClient) -> None:
    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 O")
        await writer.drain()

    async with RawServer(half_answer) as server:
        await (await client.request("GET", server.url(), [])).read()
        with pytest.raises(ConnectionDropped):
            await client.request("GET", server.url(), [])
    assert server.accepted == 1


# -- the per-host limit ---------------------------------------------------------------------


async def _round_trip_elsewhere() -> None:
    """Real I/O on another connection: by its end, every task that was ready when it
    started has run its first step (the loop runs ready callbacks in order)."""
    other = HttpClient()
    try:
        async with RawServer(keep_alive(lambda _: ok())) as server:
            await (await other.request("GET", server.url(), [])).read()
    finally:
        await other.close()


async def test_limit_per_host_queues_requests_in_order() -> None:
    http = HttpClient(ClientLimits(limit_per_host=1))
    seen: list[RawRequest] = []
    try:
        async with RawServer(keep_alive(lambda r: ok(r.target.encode()), seen)) as server:
            held = await http.request("GET", server.url("/held"), [])
            assert http.stats() == PoolStats(in_use=1, idle=0, limit=1)
            async with asyncio.timeout(10), asyncio.TaskGroup() as group:
                second = group.create_task(http.request("GET", server.url("/second"), []))
                third = group.create_task(http.request("GET", server.url("/third"), []))
                await _round_trip_elsewhere()
                assert not second.done()
                assert not third.done()
                assert seen[-1].target == "/held"
                assert await held.read() == b"/held"
                assert await (await second).read() == b"/second"
                assert await (await third).read() == b"/third"
            assert http.stats() == PoolStats(in_use=0, idle=1, limit=1)
        assert server.accepted == 1
        assert [r.target for r in seen] == ["/held", "/second", "/third"]
    finally:
        await http.close()


async def test_waiting_for_a_connection_is_bounded_by_the_deadline() -> None:
    http = HttpClient(ClientLimits(limit_per_host=1))
    try:
        async with RawServer(keep_alive(lambda _: ok())) as server:
            held = await http.request("GET", server.url(), [])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 0.05
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(5):  # a regression fails instead of hanging
                    await http.request("GET", server.url(), [], deadline=deadline)
            assert loop.time() - deadline < 2
            held.close()
            # The slot of the closed connection is free again.
            await (await http.request("GET", server.url(), [])).read()
            assert http.stats() == PoolStats(in_use=0, idle=1, limit=1)
        assert server.accepted == 2
    finally:
        await http.close()


async def test_a_dropped_connection_hands_its_slot_to_a_waiter() -> None:
    http = HttpClient(ClientLimits(limit_per_host=1))
    try:
        async with RawServer(keep_alive(lambda _: ok(b"x" * 100))) as server:
            held = await http.request("GET", server.url(), [])
            async with asyncio.timeout(10), asyncio.TaskGroup() as group:
                waiting = group.create_task(http.request("GET", server.url(), []))
                await _round_trip_elsewhere()
                assert not waiting.done()
                held.close()
                assert await (await waiting).read() == b"x" * 100
            assert http.stats() == PoolStats(in_use=0, idle=1, limit=1)
        assert server.accepted == 2
    finally:
        await http.close()


# -- resolving ------------------------------------------------------------------------------


async def test_resolver_answers_are_cached_per_host_and_port() -> None:
    resolver = CountingResolver("127.0.0.1")
    http = HttpClient(ClientLimits(keepalive_timeout=0), resolver=resolver)
    try:
        async with RawServer(keep_alive(lambda _: ok())) as server:
            for _ in range(3):
                url = f"http://api.example.test:{server.port}/"
                await (await http.request("GET", url, [])).read()
        assert server.accepted == 3
        assert resolver.calls == [("api.example.test", server.port)]
    finally:
        await http.close()


async def test_dns_cache_can_be_disabled_and_literals_are_resolved_too() -> None:
    resolver = CountingResolver("127.0.0.1")
    http = HttpClient(ClientLimits(keepalive_timeout=0, dns_cache_seconds=0), resolver=resolver)
    try:
        async with RawServer(keep_alive(lambda _: ok())) as server:
            for _ in range(2):
                await (await http.request("GET", server.url(), [])).read()
        assert resolver.calls == [("127.0.0.1", server.port)] * 2
    finally:
        await http.close()


async def test_resolver_exception_propagates_unchanged_and_is_not_cached() -> None:
    resolver = RefusingResolver()
    http = HttpClient(resolver=resolver)
    try:
        for _ in range(2):
            with pytest.raises(Blocked):
                await http.request("GET", "http://metadata.internal/", [])
        assert resolver.calls == 2
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
    finally:
        await http.close()


async def test_addresses_are_tried_in_order() -> None:
    # Nothing listens on 127.0.0.2 at the server's port: refused, then the next address.
    resolver = CountingResolver("127.0.0.2", "127.0.0.1")
    http = HttpClient(resolver=resolver)
    try:
        async with RawServer(keep_alive(lambda _: ok())) as server:
            response = await http.request("GET", f"http://svc.test:{server.port}/", [])
            assert await response.read() == b"ok"
    finally:
        await http.close()


async def test_connect_error_when_every_address_fails() -> None:
    async with RawServer(keep_alive(lambda _: ok())) as server:
        port = server.port
    http = HttpClient(resolver=CountingResolver("127.0.0.1", "127.0.0.1"))
    try:
        with pytest.raises(ConnectError) as raised:
            await http.request("GET", f"http://gone.test:{port}/", [])
        assert (raised.value.host, raised.value.port) == ("gone.test", port)
        assert raised.value.strerror == "Connection refused"
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
    finally:
        await http.close()


async def test_connect_error_when_the_resolver_finds_nothing() -> None:
    http = HttpClient(resolver=CountingResolver())
    try:
        with pytest.raises(ConnectError):
            await http.request("GET", "http://nothing.test/", [])
    finally:
        await http.close()


async def test_system_resolver_returns_distinct_stream_addresses() -> None:
    assert await SystemResolver().resolve("127.0.0.1", 80) == ["127.0.0.1"]
    addresses = await SystemResolver().resolve("localhost", 80)
    assert "127.0.0.1" in addresses
    assert len(addresses) == len(set(addresses))


@pytest.mark.parametrize("name", ["bad name", "bad..name"])
async def test_system_resolver_failure_is_a_connect_error(name: str) -> None:
    # Impossible names: refused by the C library or the idna codec, no DNS traffic.
    with pytest.raises(ConnectError) as raised:
        await SystemResolver().resolve(name, 443)
    assert (raised.value.host, raised.value.port) == (name, 443)


async def test_ipv6_literal_is_resolved_without_brackets_and_bracketed_in_host() -> None:
    resolver = CountingResolver("127.0.0.1")
    seen: list[RawRequest] = []
    http = HttpClient(resolver=resolver)
    try:
        async with RawServer(keep_alive(lambda _: ok(), seen)) as server:
            await (await http.request("GET", f"http://[::1]:{server.port}/v6", [])).read()
        assert resolver.calls == [("::1", server.port)]
        assert seen[0].header("host") == f"[::1]:{server.port}"
    finally:
        await http.close()


# -- closing the client ------------------------------------------------------------------------


async def test_close_ends_pooled_and_in_use_connections() -> None:
    http = HttpClient()
    async with (
        RawServer(keep_alive(lambda _: ok())) as pooled_server,
        RawServer(keep_alive(lambda _: ok(b"x" * (2 * 1024 * 1024)))) as server,
    ):
        await (await http.request("GET", pooled_server.url(), [])).read()
        in_use = await http.request("GET", server.url(), [])
        assert http.stats() == PoolStats(in_use=1, idle=1, limit=0)
        await http.close()
        assert http.stats() == PoolStats(in_use=0, idle=0, limit=0)
        with pytest.raises(ConnectionDropped):
            await in_use.read()
        with pytest.raises(ClientError):
            await http.request("GET", server.url(), [])
