"""Fake token endpoints on real sockets, and builders for the objects a grant reads.

`TokenServer` records every request it receives, exactly as it arrived, and dispatches it
to a per-path handler. The handlers below validate what a real endpoint would (grant
type, client authentication, the refresh token) and refuse the way real ones do, so a
grant that builds a wrong request fails its test instead of passing by accident.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDictProxy, MultiMapping

from credentials.grants import GrantRequest, TokenHttp
from credentials.models import Connection, Integration, Provider
from credentials.providers import to_provider
from tests.factories import make_connection, make_integration

Handler = Callable[[web.Request, "Received"], Awaitable[web.StreamResponse]]

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Received:
    """One request as the fake endpoint saw it."""

    method: str
    path: str
    raw_path: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    body: bytes

    def form(self) -> dict[str, str]:
        pairs = parse_qsl(self.body.decode(), keep_blank_values=True, strict_parsing=True)
        assert len({key for key, _ in pairs}) == len(pairs), "a form field was sent twice"
        return dict(pairs)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def params(self) -> dict[str, Any]:
        """The body parameters, whichever encoding the Content-Type announces."""
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            decoded = self.json()
            assert isinstance(decoded, dict)
            return decoded
        assert content_type.startswith("application/x-www-form-urlencoded"), content_type
        return dict(self.form())


@dataclass
class TokenServer:
    """An aiohttp app on 127.0.0.1: per-path handlers, every request recorded."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # Handlers that must hang (timeouts) wait on this; closing sets it so they end.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: TestServer | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        self.release.set()
        if self._server is not None:
            await self._server.close()

    def url(self, path: str) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}{path}"

    def on(self, path: str, handler: Handler) -> None:
        self.handlers[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=request.query,
            headers=request.headers,
            body=await request.read(),
        )
        self.received.append(received)
        raw_path = request.raw_path.partition("?")[0]
        handler = self.handlers.get(raw_path) or self.handlers.get(request.path)
        if handler is None:
            return web.json_response({"error": "not_found"}, status=404)
        return await handler(request, received)

    @property
    def last(self) -> Received:
        assert self.received, "the token endpoint received nothing"
        return self.received[-1]


# --- handlers -----------------------------------------------------------------------


def answer(
    body: Mapping[str, Any] | bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> Handler:
    """A handler that answers the same thing to anything."""

    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        content_type = "text/html" if isinstance(body, bytes) else "application/json"
        return web.Response(body=raw, status=status, content_type=content_type, headers=headers)

    return handle


def oauth_error(error: str, status: int, description: str = "refused") -> web.Response:
    payload = {"error": error, "error_description": description}
    return web.json_response(payload, status=status)


def basic_client(received: Received) -> tuple[str, str] | None:
    value = received.headers.get("Authorization", "")
    if not value.startswith("Basic "):
        return None
    client_id, _, secret = base64.b64decode(value[6:]).decode().partition(":")
    return client_id, secret


def client_is(
    received: Received, params: Mapping[str, Any], client: tuple[str, str], *, basic: bool
) -> bool:
    """The client authenticated one way only: the Basic header xor the body."""
    if basic:
        return basic_client(received) == client and "client_secret" not in params
    in_body = (params.get("client_id"), params.get("client_secret"))
    return "Authorization" not in received.headers and in_body == client


def refresh_endpoint(
    *,
    client: tuple[str, str],
    refresh_token: str,
    answer_with: Mapping[str, Any],
    basic: bool = False,
    json_body: bool = False,
) -> Handler:
    """An OAuth 2 token endpoint that accepts exactly one refresh request."""

    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        if received.method != "POST" or "application/json" not in received.headers.get(
            "Accept", ""
        ):
            return oauth_error("invalid_request", 400)
        expected_type = "application/json" if json_body else "application/x-www-form-urlencoded"
        if not received.headers.get("Content-Type", "").startswith(expected_type):
            return oauth_error("invalid_request", 400, "wrong content type")
        params = received.params()
        if params.get("grant_type") != "refresh_token":
            return oauth_error("unsupported_grant_type", 400)
        if not client_is(received, params, client, basic=basic):
            return oauth_error("invalid_client", 401)
        if params.get("refresh_token") != refresh_token:
            return oauth_error("invalid_grant", 400)
        return web.json_response(dict(answer_with))

    return handle


def hang(server: TokenServer) -> Handler:
    """A handler that answers only when the server closes (to provoke timeouts)."""

    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        await server.release.wait()
        return web.json_response({"access_token": "too-late"})

    return handle


# --- builders -----------------------------------------------------------------------


def provider(auth_mode: str, **definition: Any) -> Provider:
    """A catalogue entry through the real loader's validation."""
    entry = {"display_name": "Fake", "auth_mode": auth_mode, **definition}
    return to_provider("fake", entry, "tests")


def grant_request(
    http: TokenHttp,
    provider: Provider,
    credentials: dict[str, Any],
    *,
    client: dict[str, Any] | None = None,
    connection_config: dict[str, Any] | None = None,
    now: float = NOW,
) -> GrantRequest:
    connection: Connection = make_connection(
        credentials, provider=provider.name, connection_config=connection_config or {}
    )
    integration: Integration = make_integration(client, provider=provider.name)
    return GrantRequest(connection, integration, provider, http, now)


def rsa_key() -> tuple[str, str]:
    """A fresh RSA key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pems(key)


def ec_key() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _pems(key)


def _pems(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public
