"""A fake provider for the auth modes authgate renews itself (and the static ones).

One aiohttp application on a real socket plays both halves of each provider. Its token
endpoints accept only what a correct client sends and say why they refused anything
else (in `refusals`); its APIs accept only the credential a correct proxy injects:

| route | checks |
| --- | --- |
| `POST /cc/token` | client credentials grant: Basic client auth, grant_type, scope, audience |
| `POST /app/installations/{id}/access_tokens` | GitHub: the RS256 app JWT (iss, iat, exp) |
| `POST /two-step/{tenant}/login` | a TWO_STEP login: api key header, JSON credentials |
| `/bearer/...` | a Bearer token a token endpoint issued, unexpired and not revoked |
| `/basic/...` | exactly `Basic base64(username:password)` |
| `/key/...` | the API key in the `x-api-key` header and the `key` query parameter |
| `/jwt-hs/...`, `/jwt-rs/...` | a JWT signed HS256 / RS256 with the expected header and claims |

Every token it issues is recorded with its lifetime, so a test can tell when a renewal
happened, and how many, not only that requests succeeded.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GITHUB_ACCEPT: Final = "application/vnd.github+json"
# GitHub refuses app JWTs that live longer than this.
APP_JWT_MAX_SECONDS: Final = 600
JWT_AUDIENCE: Final = "/admin/"
JWT_KEY_ID: Final = "kid-1"
JWT_ISSUER: Final = "svc-account"
CC_SCOPE: Final = "read write"
CC_AUDIENCE: Final = "https://api.example.test"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An RSA key pair as PEM text; the private half in PKCS#1, as GitHub hands it out."""

    private_pem: str = field(repr=False)
    public_pem: str


def rsa_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private.decode(), public.decode())


@dataclass(frozen=True, slots=True, repr=False)
class Accounts:
    """What the provider knows about its customers. Every value is a secret: no repr."""

    client_id: str
    client_secret: str
    app_id: str
    installation_id: str
    app_public_key: str
    tenant: str
    username: str
    password: str
    login_key: str
    basic_username: str
    basic_password: str
    api_key: str
    jwt_hmac_secret: bytes
    jwt_public_key: str


def app_only_accounts(app_id: str, installation_id: str, app_public_key: str) -> Accounts:
    """Accounts for tests of the GitHub App alone: every other credential is a random
    value nobody sends."""
    unused = "unused-" + secrets.token_hex(4)
    return Accounts(
        client_id=unused,
        client_secret=unused,
        app_id=app_id,
        installation_id=installation_id,
        app_public_key=app_public_key,
        tenant=unused,
        username=unused,
        password=unused,
        login_key=unused,
        basic_username=unused,
        basic_password=unused,
        api_key=unused,
        jwt_hmac_secret=b"",
        jwt_public_key=app_public_key,
    )


@dataclass(frozen=True, slots=True)
class Issued:
    kind: str  # "cc", "app" or "two_step": which token endpoint issued it
    token: str = field(repr=False)
    issued_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One API request the fake served: which API, and the credential it accepted."""

    api: str
    path: str
    credential: str = field(repr=False)


class ModeFake:
    """The fake's state and its aiohttp application; serve it with `serve`."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        # Seconds each token endpoint's tokens live; tests shorten them.
        self.lifetimes: dict[str, int] = {"cc": 3600, "app": 3600, "two_step": 3600}
        self.issued: list[Issued] = []
        self.token_calls: Counter[str] = Counter()
        self.refusals: list[str] = []
        self.served: list[ApiCall] = []
        self.unauthorized = 0
        self._live: dict[str, Issued] = {}
        self.app = web.Application()
        routes = self.app.router
        routes.add_post("/cc/token", self._client_credentials)
        routes.add_post("/app/installations/{installation}/access_tokens", self._installation)
        routes.add_post("/two-step/{tenant}/login", self._login)
        routes.add_route("*", "/bearer/{tail:.*}", self._bearer_api)
        routes.add_route("*", "/basic/{tail:.*}", self._basic_api)
        routes.add_route("*", "/key/{tail:.*}", self._key_api)
        routes.add_route("*", "/jwt-hs/{tail:.*}", self._jwt_hs_api)
        routes.add_route("*", "/jwt-rs/{tail:.*}", self._jwt_rs_api)

    def __repr__(self) -> str:
        return f"ModeFake(issued={len(self.issued)}, refusals={self.refusals!r})"

    # --- test-side controls and views ---------------------------------------------------

    def revoke(self, kind: str) -> None:
        """Forget every live token of one kind, as a provider-side revocation would."""
        self._live = {token: item for token, item in self._live.items() if item.kind != kind}

    def issued_of(self, kind: str) -> list[Issued]:
        return [item for item in self.issued if item.kind == kind]

    # --- token endpoints ----------------------------------------------------------------

    async def _client_credentials(self, request: web.Request) -> web.Response:
        self.token_calls["cc"] += 1
        accounts = self.accounts
        form = await request.post()
        expected_auth = basic_header(accounts.client_id, accounts.client_secret)
        problems = [
            *_differs("authorization", request.headers.get("Authorization"), expected_auth),
            *_differs("content-type", request.content_type, "application/x-www-form-urlencoded"),
            *_differs("grant_type", form.get("grant_type"), "client_credentials"),
            *_differs("scope", form.get("scope"), CC_SCOPE),
            *_differs("audience", form.get("audience"), CC_AUDIENCE),
            *(["client secret in the body"] if "client_secret" in form else []),
        ]
        if problems:
            return self._refuse("cc", problems, 401, {"error": "invalid_client"})
        issued = self._issue("cc")
        lifetime = self.lifetimes["cc"]
        return _json({"access_token": issued.token, "token_type": "Bearer", "expires_in": lifetime})

    async def _installation(self, request: web.Request) -> web.Response:
        self.token_calls["app"] += 1
        accounts = self.accounts
        problems = [
            *_differs("installation", request.match_info["installation"], accounts.installation_id),
            *_differs("accept", request.headers.get("Accept"), GITHUB_ACCEPT),
            *(["no api version"] if not request.headers.get("X-GitHub-Api-Version") else []),
            *_differs("body", await request.read(), b"{}"),
            *self._app_jwt_problems(request.headers.get("Authorization", "")),
        ]
        if problems:
            message = {"message": "A JSON web token could not be decoded"}
            return self._refuse("app", problems, 401, message)
        issued = self._issue("app")
        answer = {
            "token": issued.token,
            "expires_at": datetime.fromtimestamp(int(issued.expires_at), UTC).isoformat(),
            "permissions": {"contents": "read"},
            "repository_selection": "all",
        }
        return _json(answer, status=201)

    def _app_jwt_problems(self, authorization: str) -> list[str]:
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer":
            return ["no Bearer app JWT"]
        try:
            claims = jwt.decode(
                token,
                self.accounts.app_public_key,
                algorithms=["RS256"],
                issuer=self.accounts.app_id,
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError as error:
            return [f"app JWT: {type(error).__name__}"]
        now = time.time()
        problems = []
        if claims["iat"] > now:
            problems.append("app JWT issued in the future")
        if claims["exp"] - claims["iat"] > APP_JWT_MAX_SECONDS:
            problems.append("app JWT lives longer than ten minutes")
        return problems

    async def _login(self, request: web.Request) -> web.Response:
        self.token_calls["two_step"] += 1
        accounts = self.accounts
        body = orjson.loads(await request.read() or b"null")
        credentials = {"username": accounts.username, "password": accounts.password}
        problems = [
            *_differs("tenant", request.match_info["tenant"], accounts.tenant),
            *_differs("x-api-key", request.headers.get("x-api-key"), accounts.login_key),
            *_differs("content-type", request.content_type, "application/json"),
            *_differs("accept", request.headers.get("Accept"), "application/json"),
            *_differs("body", body, credentials),
        ]
        if problems:
            return self._refuse("two_step", problems, 401, {"error": "bad login"})
        issued = self._issue("two_step")
        lifetime = self.lifetimes["two_step"]
        return _json({"data": {"token": issued.token, "expires_in": lifetime}})

    def _issue(self, kind: str) -> Issued:
        now = time.time()
        token = f"{kind}-{len(self.issued) + 1}-{secrets.token_urlsafe(9)}"
        issued = Issued(kind, token, now, now + self.lifetimes[kind])
        self.issued.append(issued)
        self._live[token] = issued
        return issued

    def _refuse(
        self, kind: str, problems: list[str], status: int, body: dict[str, Any]
    ) -> web.Response:
        self.refusals.extend(f"{kind}: {problem}" for problem in problems)
        return _json(body, status=status)

    # --- APIs ---------------------------------------------------------------------------

    async def _bearer_api(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        issued = self._live.get(token) if scheme == "Bearer" else None
        if issued is None or issued.expires_at <= time.time():
            return self._unauthorized()
        return self._serve(request, "bearer", token, {"kind": issued.kind})

    async def _basic_api(self, request: web.Request) -> web.Response:
        accounts = self.accounts
        expected = basic_header(accounts.basic_username, accounts.basic_password)
        presented = request.headers.get("Authorization")
        if presented != expected:
            return self._unauthorized()
        return self._serve(request, "basic", presented, {})

    async def _key_api(self, request: web.Request) -> web.Response:
        key = self.accounts.api_key
        in_header = request.headers.getall("x-api-key", [])
        in_query = request.query.getall("key", [])
        if in_header != [key] or in_query != [key]:
            return self._unauthorized()
        return self._serve(request, "key", key, {})

    async def _jwt_hs_api(self, request: web.Request) -> web.Response:
        return self._jwt_api(request, "jwt-hs", self.accounts.jwt_hmac_secret, "HS256")

    async def _jwt_rs_api(self, request: web.Request) -> web.Response:
        return self._jwt_api(request, "jwt-rs", self.accounts.jwt_public_key, "RS256")

    def _jwt_api(
        self, request: web.Request, api: str, key: str | bytes, algorithm: str
    ) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return self._unauthorized()
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=JWT_AUDIENCE,
                options={"require": ["iat", "exp", "aud"]},
            )
        except jwt.PyJWTError:
            return self._unauthorized()
        expected_header = {"alg": algorithm, "typ": "JWT", "kid": JWT_KEY_ID}
        if header != expected_header or (algorithm == "RS256" and claims.get("iss") != JWT_ISSUER):
            return self._unauthorized()
        return self._serve(request, api, token, {"claims": claims})

    def _serve(
        self, request: web.Request, api: str, credential: str, extra: dict[str, Any]
    ) -> web.Response:
        self.served.append(ApiCall(api, request.path, credential))
        return _json({"api": api, "path": request.path, **extra})

    def _unauthorized(self) -> web.Response:
        self.unauthorized += 1
        return _json({"error": "invalid_token"}, status=401)


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _differs(name: str, got: object, expected: object) -> list[str]:
    """A refusal reason naming the field (never its value), or none."""
    return [] if got == expected else [f"wrong {name}"]


def _json(body: object, *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1 on a free port; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()
