"""A lean pooled HTTP/1.1 client for the proxy's upstream calls (asyncio Protocol + httptools).

It replaces aiohttp's ClientSession on the hot path and does only what the proxy needs:
send a request head built in one piece, stream a body either way with backpressure,
reuse connections, and report failures as a few precise exceptions. It adds no header of
its own besides Host and the body framing, never rewrites the request target, and
decodes gzip/deflate only when asked. Pure transport: it imports nothing from the rest
of the project.

    client = HttpClient(ClientLimits(limit_per_host=100), resolver=guarded_resolver)
    response = await client.request("GET", url, headers, deadline=loop.time() + 30)
    try:
        async for chunk in response.iter_chunks():
            ...
    finally:
        response.release()

Module map: client_request (URL + head), client_connection (Protocol + parser),
client_response (Response), client_pool (per-host pool), client_decode (gzip/deflate),
client_headers (ResponseHeaders), client_config (limits, stats), client_errors.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterable, Sequence
from typing import Protocol

from proxy.http.client_config import ClientLimits, PoolStats
from proxy.http.client_connection import Connection
from proxy.http.client_errors import (
    ClientError,
    ConnectError,
    ConnectionDropped,
    RequestInvalid,
    ResponseInvalid,
)
from proxy.http.client_headers import ResponseHeaders
from proxy.http.client_pool import HostPool
from proxy.http.client_request import Target, build_head, parse_url
from proxy.http.client_response import Response

__all__ = [
    "ClientError",
    "ClientLimits",
    "ConnectError",
    "ConnectionDropped",
    "HttpClient",
    "PoolStats",
    "RequestInvalid",
    "Resolver",
    "Response",
    "ResponseHeaders",
    "ResponseInvalid",
    "SystemResolver",
]

# Safe to send twice (RFC 9110 §9.2.2): the only requests retried on a stale connection.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# A bytes body up to this size goes out in the same write as the head.
_COALESCE_LIMIT = 64 * 1024
_DNS_CACHE_PRUNE_AT = 1024
_CLOSE_GRACE_SECONDS = 2.0

_Body = bytes | AsyncIterable[bytes] | None
_PoolKey = tuple[str, str, int]


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """IP address strings for ``host``; any exception propagates to the caller."""
        ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), addresses deduplicated in order."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(host, port, exc.strerror or "name resolution failed") from None
        except UnicodeError:  # the idna codec refusing the name (empty label, too long)
            raise ConnectError(host, port, "not a valid host name") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpClient:
    def __init__(
        self,
        limits: ClientLimits = ClientLimits(),  # noqa: B008 - frozen, shared safely
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        unix_socket: str | None = None,
    ) -> None:
        """``unix_socket``: every request goes to that socket whatever the URL's host;
        the URL still gives the Host header and the request target."""
        self._limits = limits
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._ssl_context = ssl_context
        self._unix_socket = unix_socket
        self._pools: dict[_PoolKey, HostPool] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._connections: set[Connection] = set()
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: _Body = None,
        *,
        deadline: float | None = None,
        decompress: bool = False,
    ) -> Response:
        """Send a request; return once the final response head is in.

        ``deadline`` (event-loop time) bounds connecting, sending and waiting for the
        head. Raises RequestInvalid before anything is sent for a bad URL, method or
        header; ConnectError, ConnectionDropped, ResponseInvalid or TimeoutError after.
        """
        if self._closed:
            raise ClientError("the client was closed")
        target = parse_url(url)
        length: int | None = None
        streamed = False
        if isinstance(body, memoryview):
            body = body.tobytes()
        if isinstance(body, bytes | bytearray):
            length = len(body)
        elif body is not None:
            streamed = True
        head, declared = build_head(method, target, headers, length, streamed)
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise TimeoutError("the request deadline passed before sending")
        pool = self._pool_for(target, loop)
        is_head = method == "HEAD"
        conn = await self._checkout(pool, target, deadline, loop.time(), fresh=False)
        try:
            return await self._exchange(conn, head, body, declared, is_head, deadline, decompress)
        except ConnectionDropped:
            # A reused connection the server had already closed: nothing was processed,
            # so a request that is safe to repeat goes once more on a new connection.
            if not (conn.reused and conn.rx == 0 and not streamed and method in _IDEMPOTENT):
                raise
        conn = await self._checkout(pool, target, deadline, loop.time(), fresh=True)
        return await self._exchange(conn, head, body, declared, is_head, deadline, decompress)

    @property
    def unix_socket(self) -> str | None:
        """The Unix socket every request goes to, when the client was built for one."""
        return self._unix_socket

    def stats(self) -> PoolStats:
        pools = self._pools.values()
        return PoolStats(
            in_use=sum(pool.in_use for pool in pools),
            idle=sum(pool.idle for pool in pools),
            limit=self._limits.limit_per_host,
        )

    async def close(self) -> None:
        """Close every pooled and in-use connection; later requests raise ClientError."""
        self._closed = True
        connections = list(self._connections)
        gone = [conn.closed_future() for conn in connections]
        for pool in self._pools.values():
            pool.close()
        for conn in connections:
            conn.pool.drop(conn, abort=False)
        if gone:
            _, pending = await asyncio.wait(gone, timeout=_CLOSE_GRACE_SECONDS)
            if pending:
                for conn in connections:
                    conn.close_transport(abort=True)

    # -- one exchange ------------------------------------------------------------------

    async def _exchange(
        self,
        conn: Connection,
        head: bytes,
        body: _Body,
        declared: int | None,
        is_head: bool,
        deadline: float | None,
        decompress: bool,
    ) -> Response:
        response = Response(conn, decompress)
        conn.start(response, is_head)
        try:
            if body is None:
                conn.write(head)
                conn.request_sent = True
            elif isinstance(body, bytes | bytearray):
                if len(body) <= _COALESCE_LIMIT:
                    conn.write(b"".join((head, body)))
                else:
                    conn.write(head)
                    conn.write(body)
                conn.request_sent = True
            else:
                await _send_stream(conn, head, body, declared, deadline)
            while not conn.head_done:
                if response._error is not None:
                    raise response._error
                await conn.wait(deadline)
        except BaseException:
            response.close()
            raise
        return response

    # -- connections -------------------------------------------------------------------

    def _pool_for(self, target: Target, loop: asyncio.AbstractEventLoop) -> HostPool:
        if self._unix_socket is None:
            key = (target.scheme, target.host.lower(), target.port)
        else:
            key = (target.scheme, self._unix_socket, 0)
        pool = self._pools.get(key)
        if pool is None:
            limits = self._limits
            pool = HostPool(
                loop, limits.keepalive_timeout, limits.limit_per_host, self._connections
            )
            self._pools[key] = pool
        return pool

    async def _checkout(
        self, pool: HostPool, target: Target, deadline: float | None, now: float, *, fresh: bool
    ) -> Connection:
        if not fresh:
            conn = pool.take_idle(now)
            if conn is not None:
                return conn
        if not pool.reserve():
            # At the limit. A retry that must not reuse takes an idle connection's slot
            # rather than queue behind it.
            turn = pool.take_idle(now) if fresh else None
            if turn is None:
                turn = await pool.wait_turn(deadline)
            if turn is not None:
                if not fresh:
                    return turn
                pool.recycle(turn)
        try:
            conn = await self._connect(pool, target, deadline)
        except BaseException:
            pool.release_slot()
            raise
        pool.adopt(conn)
        return conn

    async def _connect(self, pool: HostPool, target: Target, deadline: float | None) -> Connection:
        """Resolve and connect (TLS included) within connect_timeout and the deadline."""
        loop = asyncio.get_running_loop()
        limits = self._limits
        give_up_at = loop.time() + limits.connect_timeout
        if deadline is not None and deadline < give_up_at:
            give_up_at = deadline
        tls = self._tls_context() if target.scheme == "https" else None
        server_hostname = target.host if tls is not None else None

        def new_connection() -> Connection:
            return Connection(loop, pool, limits)

        async with asyncio.timeout_at(give_up_at):
            if self._unix_socket is not None:
                try:
                    _, conn = await loop.create_unix_connection(
                        new_connection, self._unix_socket, ssl=tls, server_hostname=server_hostname
                    )
                except OSError as exc:
                    raise ConnectError(self._unix_socket, 0, _describe(exc)) from None
                return conn
            addresses = await self._resolve(target.host, target.port)
            reason = "the resolver returned no address"
            for address in addresses:
                try:
                    _, conn = await loop.create_connection(
                        new_connection,
                        address,
                        target.port,
                        ssl=tls,
                        server_hostname=server_hostname,
                    )
                except OSError as exc:
                    reason = _describe(exc)
                    continue
                return conn
        raise ConnectError(target.host, target.port, reason)

    async def _resolve(self, host: str, port: int) -> list[str]:
        ttl = self._limits.dns_cache_seconds
        if ttl <= 0:
            return await self._resolver.resolve(host, port)
        now = asyncio.get_running_loop().time()
        key = (host, port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = await self._resolver.resolve(host, port)
        if len(self._dns) >= _DNS_CACHE_PRUNE_AT:
            self._dns = {k: v for k, v in self._dns.items() if v[0] > now}
        self._dns[key] = (now + ttl, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Built on first use: loading the CA store costs milliseconds.
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


async def _send_stream(
    conn: Connection,
    head: bytes,
    body: AsyncIterable[bytes],
    declared: int | None,
    deadline: float | None,
) -> None:
    """Write the head and a streamed body (chunked, or exactly ``declared`` bytes),
    waiting whenever the transport is full; stop early if the response comes first."""
    conn.write(head)
    sent = 0
    async for chunk in body:
        if conn.head_done or not conn.writable:
            break
        if not chunk:
            continue
        size = len(chunk)
        if declared is None:
            conn.write_chunk(b"%x\r\n" % size, chunk)
        else:
            sent += size
            if sent > declared:
                raise RequestInvalid("the streamed body is longer than its Content-Length")
            conn.write(chunk)
        while conn.write_paused and not conn.head_done and conn.writable:
            await conn.wait(deadline)
    else:
        if declared is None:
            conn.write(b"0\r\n\r\n")
        elif sent != declared:
            raise RequestInvalid("the streamed body is shorter than its Content-Length")
        conn.request_sent = True
        return
    # The upstream answered (or went away) mid-upload: the rest is not wanted. The
    # caller then finds the early response, or the error that ended the connection.
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()


def _describe(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {exc.reason or type(exc).__name__}"
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or type(exc).__name__
