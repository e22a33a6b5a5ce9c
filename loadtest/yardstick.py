"""The yardstick: the plainest aiohttp proxy that does authgate's job, to measure it against.

    YARDSTICK_TOKEN=<token> python loadtest/yardstick.py --port 8090 \\
        --upstream http://127.0.0.1:8080 [--connection-id bench-conn] [--host 127.0.0.1]

One process on uvloop: an aiohttp ``web.Application`` with one route and one
``ClientSession``. ``/proxy/{path}?{query}`` goes to ``{upstream}/{path}?{query}`` with the
method, the end-to-end headers and the body as they came, except that ``Authorization``
becomes ``Bearer <token>``, the token looked up in a dict by the caller's
``Connection-Id``. Request and response bodies stream; the upstream's status and
end-to-end headers come back. ``GET /health`` answers 200.

Nothing else: no caller authentication, retries, limits, redirects policy or logging. It
is the floor of what an aiohttp-based proxy costs on this machine, not a product; the
token comes from the environment so that it stays out of the process list.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

import uvloop
from aiohttp import ClientError, ClientSession, DummyCookieJar, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = ["PREFIX", "TOKEN_VARIABLE", "main", "make_app"]

PREFIX: Final = "/proxy"
TOKEN_VARIABLE: Final = "YARDSTICK_TOKEN"  # noqa: S105 - a variable name, not a secret
# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The caller's credential and routing header stay here; aiohttp writes Host itself.
NOT_FORWARDED: Final = HOP_BY_HOP | {"authorization", "connection-id", "host"}

UPSTREAM = web.AppKey("upstream", str)
AUTHORIZATIONS = web.AppKey("authorizations", dict[str, str])
SESSION = web.AppKey("session", ClientSession)


def request_headers(incoming: CIMultiDictProxy[str], authorization: str) -> CIMultiDict[str]:
    headers = CIMultiDict(
        (name, value) for name, value in incoming.items() if name.lower() not in NOT_FORWARDED
    )
    headers["Authorization"] = authorization
    return headers


def response_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict(
        (name, value) for name, value in incoming.items() if name.lower() not in HOP_BY_HOP
    )


async def forward(request: web.Request) -> web.StreamResponse:
    app = request.app
    authorization = app[AUTHORIZATIONS].get(request.headers.get("Connection-Id", ""))
    if authorization is None:
        return web.json_response({"error": "unknown connection"}, status=404)
    # raw_path keeps the caller's bytes (percent-encoding, query) as sent.
    url = URL(app[UPSTREAM] + request.raw_path[len(PREFIX) :], encoded=True)
    headers = request_headers(request.headers, authorization)
    # The caller's Content-Length is forwarded with the stream, so a sized body stays
    # sized; a chunked one goes out chunked.
    body = request.content if request.body_exists else None
    try:
        answer = await app[SESSION].request(request.method, url, headers=headers, data=body)
    except ClientError:
        return web.json_response({"error": "upstream unreachable"}, status=502)
    async with answer:
        response = web.StreamResponse(
            status=answer.status, reason=answer.reason, headers=response_headers(answer.headers)
        )
        await response.prepare(request)
        # A failure from here on propagates: aiohttp drops the connection, so a cut body
        # never looks complete.
        async for chunk in answer.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def client_session(app: web.Application) -> AsyncIterator[None]:
    # Bytes pass untouched (no decompression) and no cookie is kept between callers.
    async with ClientSession(auto_decompress=False, cookie_jar=DummyCookieJar()) as session:
        app[SESSION] = session
        yield


def make_app(upstream: str, tokens: Mapping[str, str]) -> web.Application:
    """The proxy for ``upstream`` (``http://host:port``), tokens keyed by connection id."""
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    # The header value is built once per connection, not per request.
    app[AUTHORIZATIONS] = {connection: f"Bearer {token}" for connection, token in tokens.items()}
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/health", health)
    app.router.add_route("*", PREFIX + "/{tail:.*}", forward)
    return app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python loadtest/yardstick.py",
        description=f"minimal aiohttp proxy; the token comes from ${TOKEN_VARIABLE}",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--connection-id", default="bench-conn")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        print(f"yardstick: set {TOKEN_VARIABLE}", file=sys.stderr)
        return 2
    app = make_app(args.upstream, {args.connection_id: token})
    loop = uvloop.new_event_loop()
    web.run_app(app, host=args.host, port=args.port, loop=loop, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
