"""A tiny third-party API stand-in for the benchmark, the locust scenario and tests.

Routes (any method):

- ``/small``            a ~200 B JSON body
- ``/big``              a 64 KiB JSON body
- ``/status/{code}``    that status code (200-599), a short JSON body unless the code forbids one
- ``/echo``             the request's method, path, query, headers and body as JSON
- ``/stream/{bytes}``   a chunked ``application/octet-stream`` body of exactly that many bytes
- ``/trickle/{chunks}`` a slow chunked body: ``chunks`` chunks of ``?size=`` bytes (1024), one
                        every ``?interval_ms=`` (100)
- ``/upload``           reads the request body, discards it, answers ``{"bytes": n, "chunked": b}``
- ``/fail/{status}/{times}?key=K``
                        the first ``times`` requests with key ``K`` answer ``status`` (a 429
                        carries ``Retry-After: ?retry_after=``, 1), the next one 200
                        ``{"attempts": n}``: a flaky provider that a retrying proxy gets past
- ``/oauth/token``      an OAuth 2 token endpoint (``grant_type=refresh_token``) issuing access
                        tokens that live ``?expires_in=`` seconds (3600)
- ``/oauth/me``         200 for an unexpired access token from ``/oauth/token``, else 401

Tokens are self-describing (``fake-at.<expiry>.<nonce>``) so the provider checks them
without remembering them; the only state is the ``/fail`` counters, dropped on success.

Run it with ``python -m loadtest.fake_provider --port N``. It uses aiohttp's low-level
``web.Server`` (no router, no access log) so that it costs as little CPU as possible next
to the proxy it is feeding.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import orjson
import uvloop
from aiohttp import web

__all__ = [
    "BIG_BODY",
    "REFRESH_TOKEN_PREFIX",
    "SMALL_BODY",
    "STREAM_CHUNK_SIZE",
    "access_token_expiry",
    "handle",
    "issue_access_token",
    "make_server",
    "serve",
]

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ParamHandler = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]

SMALL_BODY: Final = orjson.dumps(
    {
        "id": "cmpl-7a1f0c2e9b",
        "object": "fake.small",
        "created": 1700000000,
        "owner": "loadtest",
        "items": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}],
        "has_more": False,
        "note": "about the size of a typical API answer",
    }
)
_BIG_SIZE: Final = 64 * 1024
_BIG_PREFIX: Final = b'{"object":"fake.big","data":"'
_BIG_SUFFIX: Final = b'"}'
BIG_BODY: Final = (
    _BIG_PREFIX + b"x" * (_BIG_SIZE - len(_BIG_PREFIX) - len(_BIG_SUFFIX)) + _BIG_SUFFIX
)

STREAM_CHUNK_SIZE: Final = 16 * 1024
# A typo in a load script must not turn into an endless download.
MAX_STREAM_BYTES: Final = 1024**3
_STREAM_CHUNK: Final = b"s" * STREAM_CHUNK_SIZE
# RFC 9110 §15.2, §15.3.5, §15.4.5: these responses never carry content.
_NO_CONTENT: Final = frozenset({204, 304})
_JSON: Final = "application/json"

MAX_TRICKLE_CHUNKS: Final = 10_000
MAX_TRICKLE_INTERVAL_MS: Final = 10_000
DEFAULT_TRICKLE_SIZE: Final = 1024
DEFAULT_TRICKLE_INTERVAL_MS: Final = 100

MAX_FAILURES: Final = 10
DEFAULT_RETRY_AFTER: Final = 1
MAX_RETRY_AFTER: Final = 60
# Keys whose success never came (a caller that gave up) must not grow memory for ever.
MAX_FAILURE_KEYS: Final = 100_000
# key -> failures already served for it; shared by every server of this process.
_failures_served: dict[str, int] = {}

# Prefixes that mark this provider's tokens, not secrets.
ACCESS_TOKEN_PREFIX: Final = "fake-at."  # noqa: S105
REFRESH_TOKEN_PREFIX: Final = "fake-rt."  # noqa: S105
DEFAULT_TOKEN_LIFETIME: Final = 3600
MAX_TOKEN_LIFETIME: Final = 86_400


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _error(status: int, message: str) -> web.Response:
    return _json(orjson.dumps({"error": message}), status)


async def _small(_: web.BaseRequest) -> web.StreamResponse:
    return _json(SMALL_BODY)


async def _big(_: web.BaseRequest) -> web.StreamResponse:
    return _json(BIG_BODY)


def _header_map(request: web.BaseRequest) -> dict[str, str]:
    # Lower-case names make lookups deterministic; repeated fields are joined with ", "
    # as RFC 9110 §5.3 allows for list-valued fields.
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _echo(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    query: dict[str, list[str]] = {}
    for name, value in request.query.items():
        query.setdefault(name, []).append(value)
    echoed = {
        "method": request.method,
        "path": request.path,
        "query": query,
        "headers": _header_map(request),
        "body": body.decode("utf-8", errors="replace"),
    }
    return _json(orjson.dumps(echoed))


async def _status(_: web.BaseRequest, arg: str) -> web.StreamResponse:
    if not arg.isdigit() or not 200 <= int(arg) <= 599:
        return _error(400, "status must be an integer from 200 to 599")
    code = int(arg)
    if code in _NO_CONTENT:
        return web.Response(status=code)
    return _json(orjson.dumps({"status": code}), code)


async def _stream(request: web.BaseRequest, arg: str) -> web.StreamResponse:
    if not arg.isdigit() or int(arg) > MAX_STREAM_BYTES:
        return _error(400, f"bytes must be an integer from 0 to {MAX_STREAM_BYTES}")
    remaining = int(arg)
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    await response.prepare(request)
    while remaining > 0:
        size = min(remaining, STREAM_CHUNK_SIZE)
        await response.write(_STREAM_CHUNK[:size])
        remaining -= size
    await response.write_eof()
    return response


def _bounded_int(text: str | None, low: int, high: int, default: int | None = None) -> int | None:
    """``text`` as an int in [low, high]; ``default`` when absent; None when invalid."""
    if text is None:
        return default
    if not text.isdigit():
        return None
    value = int(text)
    return value if low <= value <= high else None


async def _trickle(request: web.BaseRequest, arg: str) -> web.StreamResponse:
    chunks = _bounded_int(arg, 0, MAX_TRICKLE_CHUNKS)
    size = _bounded_int(request.query.get("size"), 1, STREAM_CHUNK_SIZE, DEFAULT_TRICKLE_SIZE)
    interval_ms = _bounded_int(
        request.query.get("interval_ms"), 0, MAX_TRICKLE_INTERVAL_MS, DEFAULT_TRICKLE_INTERVAL_MS
    )
    if chunks is None or size is None or interval_ms is None:
        return _error(
            400,
            f"chunks must be 0 to {MAX_TRICKLE_CHUNKS}, size 1 to {STREAM_CHUNK_SIZE}, "
            f"interval_ms 0 to {MAX_TRICKLE_INTERVAL_MS}",
        )
    chunk = _STREAM_CHUNK[:size]
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    await response.prepare(request)
    for index in range(chunks):
        if index:
            await asyncio.sleep(interval_ms / 1000)
        await response.write(chunk)
    await response.write_eof()
    return response


async def _upload(request: web.BaseRequest) -> web.StreamResponse:
    received = 0
    async for data in request.content.iter_any():
        received += len(data)
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return _json(orjson.dumps({"bytes": received, "chunked": chunked}))


async def _fail(request: web.BaseRequest, arg: str) -> web.StreamResponse:
    status_text, _, times_text = arg.partition("/")
    status = _bounded_int(status_text, 400, 599)
    times = _bounded_int(times_text, 0, MAX_FAILURES)
    retry_after = _bounded_int(
        request.query.get("retry_after"), 0, MAX_RETRY_AFTER, DEFAULT_RETRY_AFTER
    )
    key = request.query.get("key")
    if status is None or times is None or retry_after is None or not key:
        return _error(
            400,
            f"use /fail/<400-599>/<0-{MAX_FAILURES}>?key=K[&retry_after=0-{MAX_RETRY_AFTER}]",
        )
    served = _failures_served.get(key, 0)
    if served >= times:
        _failures_served.pop(key, None)
        return _json(orjson.dumps({"attempts": served + 1}))
    if key not in _failures_served and len(_failures_served) >= MAX_FAILURE_KEYS:
        _failures_served.clear()
    _failures_served[key] = served + 1
    response = _error(status, f"failure {served + 1} of {times}")
    if status == 429:
        response.headers["Retry-After"] = str(retry_after)
    return response


# --- OAuth 2 -------------------------------------------------------------------------------


def issue_access_token(expires_at: int) -> str:
    """An access token that carries its own expiry (Unix seconds)."""
    return f"{ACCESS_TOKEN_PREFIX}{expires_at}.{secrets.token_hex(8)}"


def access_token_expiry(token: str) -> int | None:
    """The expiry written into a token from :func:`issue_access_token`, else None."""
    if not token.startswith(ACCESS_TOKEN_PREFIX):
        return None
    expiry, dot, nonce = token[len(ACCESS_TOKEN_PREFIX) :].partition(".")
    return int(expiry) if expiry.isdigit() and dot and nonce else None


def _oauth_error(status: int, code: str) -> web.Response:
    # RFC 6749 §5.2: token endpoint errors are {"error": code}.
    return _json(orjson.dumps({"error": code}), status)


def _client_id(request: web.BaseRequest, form: Mapping[str, object]) -> str | None:
    """The client from HTTP Basic (RFC 6749 §2.3.1) or from the form body."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client, _, _ = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return client or None
    client_id = form.get("client_id")
    return client_id if isinstance(client_id, str) and client_id else None


async def _token(request: web.BaseRequest) -> web.StreamResponse:
    if request.method != "POST":
        return _error(405, "the token endpoint takes POST")
    lifetime = _bounded_int(
        request.query.get("expires_in"), 1, MAX_TOKEN_LIFETIME, DEFAULT_TOKEN_LIFETIME
    )
    if lifetime is None:
        return _error(400, f"expires_in must be 1 to {MAX_TOKEN_LIFETIME}")
    form = await request.post()
    if form.get("grant_type") != "refresh_token":
        return _oauth_error(400, "unsupported_grant_type")
    refresh_token = form.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
        return _oauth_error(400, "invalid_grant")
    if _client_id(request, form) is None:
        return _oauth_error(401, "invalid_client")
    answer = {
        "access_token": issue_access_token(int(time.time()) + lifetime),
        "token_type": "Bearer",
        "expires_in": lifetime,
        "refresh_token": f"{REFRESH_TOKEN_PREFIX}{secrets.token_hex(8)}",
    }
    return _json(orjson.dumps(answer))


async def _me(request: web.BaseRequest) -> web.StreamResponse:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expiry = access_token_expiry(token) if scheme.lower() == "bearer" else None
    if expiry is None or expiry <= time.time():
        response = _oauth_error(401, "invalid_token")
        # RFC 6750 §3: tells the client that a fresh token may succeed.
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    return _json(orjson.dumps({"token_expires_at": expiry}))


_FIXED: Final[Mapping[str, Handler]] = {
    "/small": _small,
    "/big": _big,
    "/echo": _echo,
    "/upload": _upload,
    "/oauth/token": _token,
    "/oauth/me": _me,
}
_PARAM: Final[Mapping[str, ParamHandler]] = {
    "status": _status,
    "stream": _stream,
    "trickle": _trickle,
    "fail": _fail,
}


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    """Answer one request; unknown paths get a JSON 404."""
    fixed = _FIXED.get(request.path)
    if fixed is not None:
        return await fixed(request)
    prefix, _, arg = request.path[1:].partition("/")
    param = _PARAM.get(prefix)
    if param is not None and arg:
        return await param(request, arg)
    return _error(404, f"no route for {request.path}")


def make_server() -> web.Server:
    # access_log=None: formatting a log line per request would cost more than the answer.
    return web.Server(handle, access_log=None)


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner = web.ServerRunner(make_server(), handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        # Report the bound port, not the requested one, so that --port 0 is usable.
        host_, port_ = runner.addresses[0][:2]
        print(f"fake provider listening on http://{host_}:{port_}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A tiny fake third-party API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
