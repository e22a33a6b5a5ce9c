"""A fake OAuth 2 provider that rotates refresh tokens, on a real socket.

It plays both halves of a provider that punishes a careless refresher:

- `POST /oauth/token` (grant_type=refresh_token) accepts only the *current* refresh token
  of a connection and replaces it with a new one on every success, as providers with
  refresh-token rotation do. Presenting a rotated one again is refused with
  `invalid_grant` and counted as a reuse: that is what a second process refreshing from
  a stale copy would see, and with a real provider the connection would be dead.
- `/api/...` (any method) answers 200 naming the connection only for an access token it issued
  that has neither expired nor been revoked, so a request served with a stale token fails.

Everything it sees is counted per connection, so a test can assert how many refreshes
happened, not just that requests succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

ACCESS_TOKEN_LIFETIME = 3600
TOKEN_PATH = "/oauth/token"
API_PREFIX = "/api/"


@dataclass(frozen=True, slots=True)
class SeededTokens:
    """What a connection holds before its first refresh: an expired access token."""

    access_token: str
    refresh_token: str
    expired_at: float


@dataclass(slots=True)
class AccessGrant:
    connection_id: str
    expires_at: float


@dataclass(slots=True)
class ConnectionLedger:
    """The provider's view of one connection: which refresh token is live, and history."""

    connection_id: str
    current_refresh_token: str
    generation: int = 0
    retired_refresh_tokens: set[str] = field(default_factory=set)
    successful_refreshes: int = 0
    rejected_reuses: int = 0


@dataclass(slots=True)
class ApiTally:
    served: int = 0
    unauthorized: int = 0


class TokenProvider:
    """The fake's state and its aiohttp application; serve it with `serve_token_provider`.

    `token_delay` holds every successful token response back for that many seconds after
    the rotation has happened, as a slow provider would: it widens the window in which a
    refresh is in flight and a second refresher could present the old refresh token.
    """

    def __init__(self, *, client_id: str, client_secret: str, token_delay: float = 0.0) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_delay = token_delay
        self.ledgers: dict[str, ConnectionLedger] = {}
        self._by_refresh_token: dict[str, ConnectionLedger] = {}
        self._access: dict[str, AccessGrant] = {}
        self.unknown_refresh_tokens = 0
        self.rejected_clients = 0
        self.unsupported_grants = 0
        self.api = ApiTally()
        # Set when the first valid refresh arrives, before its (delayed) answer is sent.
        self.first_token_call = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post(TOKEN_PATH, self._token)
        self.app.router.add_route("*", API_PREFIX + "{tail:.*}", self._api)

    def __repr__(self) -> str:
        # Token values never belong in a repr, even a fake's.
        return f"TokenProvider(connections={len(self.ledgers)})"

    # --- test-side controls ------------------------------------------------------------

    def seed(self, connection_id: str) -> SeededTokens:
        """Register a connection whose access token has already expired."""
        refresh_token = self._new_token("rt", connection_id, 0)
        ledger = ConnectionLedger(connection_id, refresh_token)
        self.ledgers[connection_id] = ledger
        self._by_refresh_token[refresh_token] = ledger
        expired_at = time.time() - ACCESS_TOKEN_LIFETIME
        access_token = self._new_token("at", connection_id, 0)
        self._access[access_token] = AccessGrant(connection_id, expired_at)
        return SeededTokens(access_token, refresh_token, expired_at)

    def revoke_access(self, connection_id: str) -> None:
        """Invalidate every access token of the connection, as a provider-side revocation
        would; its refresh token stays valid, so only a refresh can recover."""
        self._access = {
            token: grant
            for token, grant in self._access.items()
            if grant.connection_id != connection_id
        }

    def successful_refreshes(self) -> dict[str, int]:
        return {name: ledger.successful_refreshes for name, ledger in self.ledgers.items()}

    def rejected_reuses(self) -> int:
        return sum(ledger.rejected_reuses for ledger in self.ledgers.values())

    # --- token endpoint ---------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not self._client_authenticated(request, form):
            self.rejected_clients += 1
            return _oauth_error(401, "invalid_client")
        if form.get("grant_type") != "refresh_token":
            self.unsupported_grants += 1
            return _oauth_error(400, "unsupported_grant_type")
        presented = form.get("refresh_token")
        ledger = self._by_refresh_token.get(presented) if isinstance(presented, str) else None
        if ledger is None:
            self.unknown_refresh_tokens += 1
            return _oauth_error(400, "invalid_grant")
        if presented != ledger.current_refresh_token:
            ledger.rejected_reuses += 1
            return _oauth_error(400, "invalid_grant")
        # Rotate with no await in between, so two concurrent calls can never both win.
        body = self._rotate(ledger)
        self.first_token_call.set()
        if self.token_delay > 0:
            await asyncio.sleep(self.token_delay)  # a slow provider, not synchronisation
        return web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _client_authenticated(self, request: web.Request, form: Mapping[str, object]) -> bool:
        presented = _basic_credentials(request.headers.get("Authorization", ""))
        if presented is None:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            if isinstance(client_id, str) and isinstance(client_secret, str):
                presented = (client_id, client_secret)
        if presented is None:
            return False
        return presented[0] == self.client_id and secrets.compare_digest(
            presented[1].encode(), self._client_secret.encode()
        )

    def _rotate(self, ledger: ConnectionLedger) -> dict[str, object]:
        ledger.generation += 1
        ledger.successful_refreshes += 1
        ledger.retired_refresh_tokens.add(ledger.current_refresh_token)
        refresh_token = self._new_token("rt", ledger.connection_id, ledger.generation)
        ledger.current_refresh_token = refresh_token
        self._by_refresh_token[refresh_token] = ledger
        access_token = self._new_token("at", ledger.connection_id, ledger.generation)
        expires_at = time.time() + ACCESS_TOKEN_LIFETIME
        self._access[access_token] = AccessGrant(ledger.connection_id, expires_at)
        return {
            "access_token": access_token,
            "refresh_token": refresh_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_LIFETIME,
        }

    @staticmethod
    def _new_token(kind: str, connection_id: str, generation: int) -> str:
        # Readable prefix for debugging, random tail so tokens cannot be guessed or reused.
        return f"{kind}-{generation}.{connection_id}.{secrets.token_urlsafe(12)}"

    # --- API --------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grant = self._access.get(token) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at <= time.time():
            self.api.unauthorized += 1
            return web.Response(
                status=401,
                body=orjson.dumps({"error": "invalid_token"}),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        self.api.served += 1
        body = await request.read()
        payload = {
            "connection": grant.connection_id,
            "path": request.path,
            "method": request.method,
            "body": body.decode("utf-8", "replace"),
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: Basic over the form-urlencoded client id and secret."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, separator, client_secret = decoded.partition(":")
    if not separator:
        return None
    return unquote_plus(client_id), unquote_plus(client_secret)


def _oauth_error(status: int, error: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": error}), content_type="application/json"
    )


@asynccontextmanager
async def serve_token_provider(provider: TokenProvider) -> AsyncIterator[int]:
    """Serve the fake on 127.0.0.1 on a free port; yields the port."""
    runner = web.AppRunner(provider.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()
