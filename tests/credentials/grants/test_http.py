"""TokenHttp on its own: what it returns, what it refuses, how it holds its session."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from credentials.grants import GrantError, TokenCall, TokenHttp
from tests.credentials.grants.fakes import Received, TokenServer


async def test_send_returns_status_headers_and_body(server: TokenServer, http: TokenHttp) -> None:
    async def created(request: web.Request, received: Received) -> web.Response:
        return web.Response(status=201, body=b"raw-bytes", headers={"X-Thing": "1"})

    server.on("/t", created)
    call = TokenCall("PUT", server.url("/t"), {"X-Sent": "yes"}, b"payload")
    reply = await http.send(call)
    assert (reply.status, reply.headers["x-thing"], reply.body) == (201, "1", b"raw-bytes")
    assert (server.last.method, server.last.headers["X-Sent"], server.last.body) == (
        "PUT",
        "yes",
        b"payload",
    )


async def test_no_cookie_is_kept_between_calls(server: TokenServer, http: TokenHttp) -> None:
    async def sets_cookie(request: web.Request, received: Received) -> web.Response:
        response = web.Response(text="{}")
        response.set_cookie("session", "tenant-a")
        return response

    server.on("/t", sets_cookie)
    # By name: aiohttp's cookie jar ignores cookies from IP addresses anyway.
    url = server.url("/t").replace("127.0.0.1", "localhost")
    await http.send(TokenCall("POST", url))
    await http.send(TokenCall("POST", url))
    assert len(server.received) == 2
    assert "Cookie" not in server.last.headers


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/t", "http:///t", "http://169.254.169.254/t"])
async def test_refused_urls_are_misconfigured(http: TokenHttp, url: str) -> None:
    with pytest.raises(GrantError) as caught:
        await http.send(TokenCall("POST", url))
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)


def test_created_outside_a_loop_and_closed_unused() -> None:
    client = TokenHttp(allow_private=False)  # no running loop: no session yet
    asyncio.run(client.close())


def test_call_repr_hides_headers_and_body() -> None:
    call = TokenCall("POST", "https://x/t", {"Authorization": "Basic c2VjcmV0"}, b"secret=1")
    assert "c2VjcmV0" not in repr(call)
    assert "secret=1" not in repr(call)
