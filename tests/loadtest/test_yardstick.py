"""The yardstick proxies for real: a recording aiohttp upstream, the yardstick app on its
own socket, and a client talking to it over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import ClientSession, ClientTimeout, web
from pytest_aiohttp import AiohttpRawServer, AiohttpServer
from yarl import URL

from loadtest.processes import free_port
from loadtest.yardstick import TOKEN_VARIABLE, main, make_app

BIG = bytes(range(256)) * 4096  # 1 MiB


@dataclass
class Seen:
    """What the upstream received, one entry per request."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def last(self) -> tuple[str, str, dict[str, str], bytes]:
        return self.requests[-1]


async def upstream_handler(seen: Seen, request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    headers = {name.lower(): value for name, value in request.headers.items()}
    seen.requests.append((request.method, request.raw_path, headers, body))
    if request.path == "/created":
        extra = {"X-Upstream": "yes", "Keep-Alive": "timeout=5"}
        return web.Response(status=201, body=b'{"id": 7}', headers=extra)
    if request.path == "/big":
        response = web.StreamResponse()  # chunked: the yardstick must relay it as it comes
        await response.prepare(request)
        for start in range(0, len(BIG), 100_000):
            await response.write(BIG[start : start + 100_000])
        await response.write_eof()
        return response
    return web.Response(body=body or b"empty", content_type="application/json")


@dataclass
class Proxy:
    url: URL
    seen: Seen
    client: ClientSession


@pytest.fixture
async def proxy(
    aiohttp_raw_server: AiohttpRawServer, aiohttp_server: AiohttpServer
) -> AsyncIterator[Proxy]:
    seen = Seen()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return await upstream_handler(seen, request)

    upstream = await aiohttp_raw_server(handler)
    app = make_app(str(upstream.make_url("/")), {"conn-1": "tok-1"})
    server = await aiohttp_server(app)
    # Bounded: a proxy that announces a body it never sends would otherwise hang the test.
    async with ClientSession(timeout=ClientTimeout(total=10)) as client:
        yield Proxy(server.make_url("/"), seen, client)


Body = bytes | AsyncIterator[bytes] | None
Call = Callable[..., Awaitable[tuple[int, dict[str, str], bytes]]]


@pytest.fixture
def call(proxy: Proxy) -> Call:
    async def send(
        method: str, path: str, headers: dict[str, str] | None = None, data: Body = None
    ) -> tuple[int, dict[str, str], bytes]:
        url = URL(str(proxy.url.with_path("")) + path, encoded=True)
        sent = {"Connection-Id": "conn-1", **(headers or {})}
        async with proxy.client.request(method, url, headers=sent, data=data) as response:
            return response.status, dict(response.headers), await response.read()

    return send


async def test_get_injects_the_token_and_keeps_the_target_bytes(proxy: Proxy, call: Call) -> None:
    headers = {"Authorization": "Bearer caller-secret", "X-Request-Tag": "t1"}
    status, _, body = await call("GET", "/proxy/a%2Fb/c?x=1&y=%20z", headers)
    assert (status, body) == (200, b"empty")
    method, target, seen_headers, _ = proxy.seen.last
    assert (method, target) == ("GET", "/a%2Fb/c?x=1&y=%20z")
    assert seen_headers["authorization"] == "Bearer tok-1"
    assert seen_headers["x-request-tag"] == "t1"
    assert "connection-id" not in seen_headers


async def test_status_and_end_to_end_headers_come_back(call: Call) -> None:
    status, headers, body = await call("POST", "/proxy/created", data=b"{}")
    assert (status, body) == (201, b'{"id": 7}')
    assert headers["X-Upstream"] == "yes"
    assert "Keep-Alive" not in headers, "hop-by-hop headers stay on their hop"


async def test_a_sized_post_body_arrives_intact_and_sized(proxy: Proxy, call: Call) -> None:
    payload = BIG[:65536]
    headers = {"Content-Type": "application/json"}
    status, _, body = await call("POST", "/proxy/upload", headers, data=payload)
    assert (status, body) == (200, payload)
    method, target, seen_headers, received = proxy.seen.last
    assert (method, target, received) == ("POST", "/upload", payload)
    assert seen_headers["content-length"] == "65536"
    assert "transfer-encoding" not in seen_headers
    assert seen_headers["content-type"] == "application/json"


async def test_a_chunked_post_body_streams_through(proxy: Proxy, call: Call) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, 300_000, 30_000):
            yield BIG[start : start + 30_000]

    status, _, body = await call("PUT", "/proxy/upload", data=chunks())
    assert (status, body) == (200, BIG[:300_000])
    _, _, seen_headers, received = proxy.seen.last
    assert received == BIG[:300_000]
    assert seen_headers["transfer-encoding"] == "chunked"


async def test_a_streamed_answer_arrives_whole(call: Call) -> None:
    status, _, body = await call("GET", "/proxy/big")
    assert status == 200
    assert body == BIG


async def test_an_unknown_connection_never_reaches_the_upstream(proxy: Proxy, call: Call) -> None:
    status, _, _ = await call("GET", "/proxy/small", {"Connection-Id": "someone-else"})
    assert status == 404
    assert proxy.seen.requests == []


async def test_health_answers_without_a_connection(proxy: Proxy) -> None:
    async with proxy.client.get(proxy.url.with_path("/health")) as response:
        assert response.status == 200


async def test_an_unreachable_upstream_is_a_502(aiohttp_server: AiohttpServer) -> None:
    app = make_app(f"http://127.0.0.1:{free_port()}", {"conn-1": "tok-1"})
    server = await aiohttp_server(app)
    url = server.make_url("/proxy/small")
    headers = {"Connection-Id": "conn-1"}
    async with (
        ClientSession(timeout=ClientTimeout(total=10)) as client,
        client.get(url, headers=headers) as r,
    ):
        assert r.status == 502
        assert "tok-1" not in await r.text()


def test_main_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    # An address that cannot be bound: were the check missing, the server would fail, not run.
    argv = ["--host", "256.0.0.1", "--port", "1", "--upstream", "http://127.0.0.1:2"]
    assert main(argv) == 2
    assert TOKEN_VARIABLE in capsys.readouterr().err
