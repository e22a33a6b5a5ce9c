"""Fake OAuth providers on real sockets, strict the way real ones are.

`OAuth2Provider` plays an authorization server (RFC 6749 §4.1 with RFC 7636 PKCE) and
the API behind it:

- `GET [/t/{tenant}]/oauth/authorize` checks the client and redirects back to the
  `redirect_uri` with a one-time code and the `state` (or with `error=...` when a test
  makes the user refuse). It remembers what it was asked: the PKCE challenge, the
  redirect URI, the scope.
- `POST [/t/{tenant}]/oauth/token` authenticates the client (Basic header or body, as
  the test configures), accepts each code once, requires the same `redirect_uri`, and
  verifies the PKCE verifier against the challenge it saw; a code issued without a
  challenge must come back without a verifier. Form or JSON bodies.
- `GET /api/{path}` answers 200 only for an access token it issued.

`OAuth1Provider` plays RFC 5849: request token, consent redirect with a verifier, access
token, and a signed API. Every request's signature is checked with oauthlib's server
side against the secrets the provider knows.

A test drives the browser's part with an HTTP client, following each redirect by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiDict
from oauthlib.common import Request as SignedRequest
from oauthlib.oauth1.rfc5849 import signature

FORM = "application/x-www-form-urlencoded"


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _append(url: str, params: dict[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return _json(status, {"error": error, "error_description": description})


# --- OAuth 2.0 --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedCode:
    client_id: str
    redirect_uri: str
    scope: str
    tenant: str | None
    challenge: str | None
    challenge_method: str | None


@dataclass(slots=True)
class TokenExchange:
    """One call to the token endpoint, as the provider judged it."""

    client_auth: str  # "basic" or "body"
    content_type: str
    params: dict[str, str] = field(repr=False)
    verdict: str  # "ok" or the OAuth error answered


class OAuth2Provider:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_extra: dict[str, Any] | None = None,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_extra = token_extra or {}
        self.authorize_queries: list[MultiDict[str]] = []
        self.exchanges: list[TokenExchange] = []
        self.refusal: tuple[str, str] | None = None  # (error, description) for the next consent
        self.pkce_verified = 0
        self._codes: dict[str, IssuedCode] = {}
        self._access_tokens: set[str] = set()
        self._issued: list[str] = []
        self.app = web.Application()
        for prefix in ("", "/t/{tenant}"):
            self.app.router.add_get(prefix + "/oauth/authorize", self._authorize)
            self.app.router.add_post(prefix + "/oauth/token", self._token)
        self.app.router.add_get("/api/{tail:.*}", self._api)

    def __repr__(self) -> str:
        return f"OAuth2Provider(codes={len(self._codes)}, exchanges={len(self.exchanges)})"

    def issued_secrets(self) -> list[str]:
        """Every code and token it handed out (for the log scan)."""
        return list(self._issued)

    def _new(self, prefix: str) -> str:
        value = f"{prefix}-{secrets.token_urlsafe(24)}"
        self._issued.append(value)
        return value

    # --- the consent screen -------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        self.authorize_queries.append(MultiDict(query))
        redirect_uri = query.get("redirect_uri", "")
        if query.get("response_type") != "code" or query.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client or response type")
        if not redirect_uri:
            return web.Response(status=400, text="no redirect_uri")
        if self.refusal is not None:
            error, description = self.refusal
            self.refusal = None
            params = {"error": error, "error_description": description}
            return _redirect(_append(redirect_uri, {**params, "state": query.get("state", "")}))
        code = self._new("code")
        self._codes[code] = IssuedCode(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            scope=query.get("scope", ""),
            tenant=request.match_info.get("tenant"),
            challenge=query.get("code_challenge"),
            challenge_method=query.get("code_challenge_method"),
        )
        return _redirect(_append(redirect_uri, {"code": code, "state": query.get("state", "")}))

    # --- the token endpoint -------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        content_type = request.content_type
        if content_type == "application/json":
            raw = await request.json()
            params = {str(key): str(value) for key, value in raw.items()}
        else:
            params = dict(await request.post())  # type: ignore[arg-type]
        client_auth, client_id, client_secret = self._client_of(request, params)
        verdict = self._judge(params, client_id, client_secret, request.match_info.get("tenant"))
        self.exchanges.append(TokenExchange(client_auth, content_type, params, verdict))
        if verdict != "ok":
            status = 401 if verdict == "invalid_client" else 400
            return _oauth_error(status, verdict, f"refused: {verdict}")
        access_token = self._new("at")
        self._access_tokens.add(access_token)
        body = {
            "access_token": access_token,
            "refresh_token": self._new("rt"),
            "token_type": "Bearer",
            "expires_in": 3600,
            **self.token_extra,
        }
        return _json(200, body)

    @staticmethod
    def _client_of(request: web.Request, params: dict[str, str]) -> tuple[str, str, str]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            pair = base64.b64decode(header[6:]).decode()
            client_id, _, client_secret = pair.partition(":")
            return "basic", client_id, client_secret
        return "body", params.get("client_id", ""), params.get("client_secret", "")

    def _judge(
        self, params: dict[str, str], client_id: str, client_secret: str, tenant: str | None
    ) -> str:
        if client_id != self.client_id or not hmac.compare_digest(
            client_secret.encode(), self._client_secret.encode()
        ):
            return "invalid_client"
        if params.get("grant_type") != "authorization_code":
            return "unsupported_grant_type"
        issued = self._codes.pop(params.get("code", ""), None)  # single use
        if issued is None or issued.tenant != tenant:
            return "invalid_grant"
        if params.get("redirect_uri") != issued.redirect_uri:
            return "invalid_grant"
        return self._judge_pkce(issued, params.get("code_verifier"))

    def _judge_pkce(self, issued: IssuedCode, verifier: str | None) -> str:
        if issued.challenge is None:
            # No challenge at consent: a verifier now means the client is confused.
            return "ok" if verifier is None else "invalid_request"
        if issued.challenge_method != "S256" or verifier is None:
            return "invalid_grant"
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if not hmac.compare_digest(expected, issued.challenge):
            return "invalid_grant"
        self.pkce_verified += 1
        return "ok"

    # --- the API --------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or token not in self._access_tokens:
            return _json(401, {"message": "bad token"})
        return _json(200, {"ok": True, "path": request.match_info["tail"]})


# --- OAuth 1.0a -------------------------------------------------------------------------


@dataclass(slots=True)
class PendingToken:
    secret: str = field(repr=False)
    callback: str
    verifier: str | None = field(default=None, repr=False)


class OAuth1Provider:
    def __init__(self, *, consumer_key: str, consumer_secret: str) -> None:
        self.consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self.verdicts: list[tuple[str, str]] = []  # (endpoint, "ok" or why refused)
        self.request_params: list[dict[str, str]] = []
        self._pending: dict[str, PendingToken] = {}
        self._access: dict[str, str] = {}
        self._issued: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/oauth1/request_token", self._request_token)
        self.app.router.add_get("/oauth1/authorize", self._authorize)
        self.app.router.add_post("/oauth1/access_token", self._access_token)
        self.app.router.add_get("/api1/{tail:.*}", self._api)

    def __repr__(self) -> str:
        return f"OAuth1Provider(pending={len(self._pending)}, access={len(self._access)})"

    def issued_secrets(self) -> list[str]:
        return list(self._issued)

    def _new(self, prefix: str) -> str:
        value = f"{prefix}-{secrets.token_urlsafe(24)}"
        self._issued.append(value)
        return value

    async def _verified(
        self, request: web.Request, endpoint: str, token_secret: str
    ) -> dict[str, str] | None:
        """The request's oauth_* parameters when its HMAC-SHA1 signature is right."""
        body = await request.text() if request.content_type == FORM else ""
        headers = {"Authorization": request.headers.get("Authorization", "")}
        try:
            oauth = dict(
                signature.collect_parameters(headers=headers, exclude_oauth_signature=False)
            )
            params = signature.collect_parameters(
                uri_query=request.query_string, body=body or None, headers=headers
            )
        except (ValueError, KeyError):
            self.verdicts.append((endpoint, "unreadable"))
            return None
        # oauthlib's server side reads these two attributes; its stubs do not declare them.
        verb: Any = request.method
        signed: Any = SignedRequest(str(request.url), http_method=verb, body=body)
        signed.params = params
        signed.signature = oauth.get("oauth_signature", "")
        if oauth.get("oauth_consumer_key") != self.consumer_key:
            self.verdicts.append((endpoint, "unknown consumer"))
            return None
        if oauth.get("oauth_signature_method") != "HMAC-SHA1" or not signature.verify_hmac_sha1(
            signed, self._consumer_secret, token_secret
        ):
            self.verdicts.append((endpoint, "bad signature"))
            return None
        self.verdicts.append((endpoint, "ok"))
        self.request_params.append(
            {key: value for key, value in params if not key.startswith("oauth_")}
        )
        return oauth

    async def _request_token(self, request: web.Request) -> web.StreamResponse:
        oauth = await self._verified(request, "request_token", "")
        if oauth is None or not oauth.get("oauth_callback"):
            return web.Response(status=401, text="oauth_problem=signature_invalid")
        token, secret = self._new("rqt"), self._new("rqs")
        self._pending[token] = PendingToken(secret, oauth["oauth_callback"])
        body = urlencode(
            {"oauth_token": token, "oauth_token_secret": secret, "oauth_callback_confirmed": "true"}
        )
        return web.Response(text=body, content_type=FORM)

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        pending = self._pending.get(request.query.get("oauth_token", ""))
        if pending is None:
            return web.Response(status=400, text="unknown request token")
        pending.verifier = self._new("ver")
        token = request.query["oauth_token"]
        return _redirect(
            _append(pending.callback, {"oauth_token": token, "oauth_verifier": pending.verifier})
        )

    async def _access_token(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        oauth = dict(signature.collect_parameters(headers={"Authorization": header}))
        pending = self._pending.pop(oauth.get("oauth_token", ""), None)
        if pending is None:
            return web.Response(status=401, text="oauth_problem=token_rejected")
        verified = await self._verified(request, "access_token", pending.secret)
        if verified is None or verified.get("oauth_verifier") != pending.verifier:
            return web.Response(status=401, text="oauth_problem=verifier_invalid")
        token, secret = self._new("act"), self._new("acs")
        self._access[token] = secret
        body = urlencode({"oauth_token": token, "oauth_token_secret": secret, "user_id": "42"})
        return web.Response(text=body, content_type=FORM)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        try:
            oauth = dict(signature.collect_parameters(headers={"Authorization": header}))
        except (ValueError, KeyError):
            return _json(401, {"message": "unsigned"})
        secret = self._access.get(oauth.get("oauth_token", ""))
        if secret is None or await self._verified(request, "api", secret) is None:
            return _json(401, {"message": "bad signature"})
        return _json(200, {"ok": True, "path": request.match_info["tail"]})
