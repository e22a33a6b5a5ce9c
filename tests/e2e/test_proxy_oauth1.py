"""OAuth 1.0a through the proxy, end to end on real sockets.

The fake provider below checks every request the way an OAuth 1.0a API does, with its
own RFC 5849 §3.4 code (no oauthlib): it rebuilds the signature base string from the
method, host, path and query it received, signs it with the consumer and token secrets
it knows, and answers 401 on a mismatch or a nonce it has seen before.

The providers file is the shared TEST_PROVIDERS plus the OAUTH1 entries here, written to
this test's tmp_path and passed to `make_authgate` as AUTHGATE_PROVIDERS_FILE (the same
override other e2e modules use), so conftest.py stays untouched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.e2e.conftest import TEST_PROVIDERS, Authgate, Factory, json_of
from tests.e2e.fake_provider import Received

CONSUMER_KEY = "consumer-key-e2e"
CONSUMER_SECRET = "consumer-secret-e2e"
TOKEN = "token-e2e"
TOKEN_SECRET = "token-secret-e2e"

OAUTH1_PROVIDERS = """
fake-oauth1:
    display_name: Fake OAuth1
    auth_mode: OAUTH1
    authorization_url: https://auth.example.com/authorize
    token_url: https://auth.example.com/access_token
    request_url: https://auth.example.com/request_token
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/api
fake-oauth1-sha256:
    display_name: Fake OAuth1 SHA-256
    auth_mode: OAUTH1
    signature_method: HMAC-SHA256
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/api
fake-oauth1-plaintext:
    display_name: Fake OAuth1 plaintext
    auth_mode: OAUTH1
    signature_method: PLAINTEXT
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/api
fake-oauth1-rsa:
    display_name: Fake OAuth1 RSA
    auth_mode: OAUTH1
    signature_method: RSA-SHA1
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/api
"""


# --- a provider that verifies OAuth 1.0a signatures independently ------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    request: Received
    verdict: str  # "ok" or why the signature was refused
    oauth: dict[str, str]


class OAuth1Api:
    def __init__(self) -> None:
        self.checked: list[Checked] = []
        self.unavailable_once: set[str] = set()  # paths answered 503 once, after checking
        self._nonces: set[tuple[str, str]] = set()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def last(self) -> Checked:
        assert self.checked, "the OAuth1 API received nothing"
        return self.checked[-1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        received = Received(request.method, request.raw_path, headers, body)
        oauth = _protocol_parameters(received.header("Authorization") or "")
        verdict = self._verdict(request, oauth)
        self.checked.append(Checked(received, verdict, oauth))
        if verdict != "ok":
            return web.json_response({"errors": [{"message": verdict}]}, status=401)
        if request.path in self.unavailable_once:
            self.unavailable_once.discard(request.path)
            return web.json_response({"errors": [{"message": "try again"}]}, status=503)
        return web.json_response({"ok": True, "echo": body.decode()})

    def _verdict(self, request: web.Request, oauth: dict[str, str]) -> str:
        if oauth.get("oauth_consumer_key") != CONSUMER_KEY or oauth.get("oauth_token") != TOKEN:
            return "unknown consumer or token"
        nonce = (oauth.get("oauth_nonce", ""), oauth.get("oauth_timestamp", ""))
        if not all(nonce) or nonce in self._nonces:
            return "missing or reused nonce"
        self._nonces.add(nonce)
        path, _, query = request.raw_path.partition("?")
        expected = expected_signature(request.method, f"http://{request.host}{path}", query, oauth)
        if expected is None or not hmac.compare_digest(expected, oauth["oauth_signature"]):
            return "invalid signature"
        return "ok"


def _protocol_parameters(authorization: str) -> dict[str, str]:
    """`OAuth k="v", ...` (RFC 5849 §3.5.1), values percent-decoded."""
    scheme, _, rest = authorization.partition(" ")
    if scheme != "OAuth":
        return {}
    pairs = (item.strip().partition("=") for item in rest.split(","))
    return {unquote(name): unquote(value.strip('"')) for name, _, value in pairs}


def _encode(text: str) -> str:
    return quote(text, safe="~")  # RFC 5849 §3.6: everything but unreserved characters


def expected_signature(method: str, base_uri: str, query: str, oauth: dict[str, str]) -> str | None:
    """RFC 5849 §3.4: the signature a correct client sends for this request."""
    params = parse_qsl(query, keep_blank_values=True) + [
        (name, value) for name, value in oauth.items() if name not in ("oauth_signature", "realm")
    ]
    normalized = "&".join(
        f"{name}={value}" for name, value in sorted((_encode(n), _encode(v)) for n, v in params)
    )
    base_string = "&".join(_encode(part) for part in (method.upper(), base_uri, normalized))
    key = f"{_encode(CONSUMER_SECRET)}&{_encode(TOKEN_SECRET)}"
    digests = {"HMAC-SHA1": hashlib.sha1, "HMAC-SHA256": hashlib.sha256}
    method_name = oauth.get("oauth_signature_method", "")
    if method_name == "PLAINTEXT":
        return key
    if method_name not in digests:
        return None
    digest = hmac.new(key.encode(), base_string.encode(), digests[method_name]).digest()
    return base64.b64encode(digest).decode()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[OAuth1Api, int]]:
    fake = OAuth1Api()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    yield fake, server.port
    await server.close()


@pytest.fixture
async def gate(make_authgate: Factory, tmp_path: Path) -> Authgate:
    providers = tmp_path / "oauth1-providers.yaml"
    providers.write_text(TEST_PROVIDERS + OAUTH1_PROVIDERS)
    return await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))


async def connect(
    gate: Authgate,
    api_port: int,
    provider: str = "fake-oauth1",
    token_secret: str = TOKEN_SECRET,
) -> None:
    client = {"type": "OAUTH1", "client_id": CONSUMER_KEY, "client_secret": CONSUMER_SECRET}
    await gate.integration("tw", provider, credentials=client)
    credentials = {"type": "OAUTH1", "oauth_token": TOKEN, "oauth_token_secret": token_secret}
    await gate.connection("tw", "user-1", credentials, connection_config={"port": str(api_port)})


async def proxied(
    gate: Authgate,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    response = await gate.proxy(
        method, target, connection_id="user-1", provider_config_key="tw", headers=headers, data=data
    )
    body = await response.read()
    return response.status, body, dict(response.headers)


# --- the proxy signs what it sends ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "signature_method"),
    [
        ("fake-oauth1", "HMAC-SHA1"),
        ("fake-oauth1-sha256", "HMAC-SHA256"),
        ("fake-oauth1-plaintext", "PLAINTEXT"),
    ],
)
async def test_get_with_query_is_signed_over_method_url_and_query(
    gate: Authgate, api: tuple[OAuth1Api, int], provider: str, signature_method: str
) -> None:
    fake, port = api
    await connect(gate, port, provider)
    target = "/1.1/statuses/home_timeline.json?count=5&screen_name=a%20b+c&x=1&x=2&empty="
    status, body, _ = await proxied(gate, "GET", "/proxy" + target)
    assert (status, fake.last().verdict) == (200, "ok"), body
    checked = fake.last()
    assert checked.request.raw_path == "/api" + target
    assert checked.oauth["oauth_signature_method"] == signature_method
    assert gate.secret_key not in str(checked.request.headers)


async def test_every_request_is_signed_afresh(gate: Authgate, api: tuple[OAuth1Api, int]) -> None:
    fake, port = api
    await connect(gate, port)
    for _ in range(3):
        status, body, _ = await proxied(gate, "GET", "/proxy/me?fields=id")
        # The fake refuses a nonce it has seen, so a cached signature would fail here.
        assert status == 200, body
    assert len({checked.oauth["oauth_nonce"] for checked in fake.checked}) == 3


async def test_a_retry_is_signed_again_with_a_new_nonce(
    gate: Authgate, api: tuple[OAuth1Api, int]
) -> None:
    fake, port = api
    await connect(gate, port)
    fake.unavailable_once.add("/api/flaky")

    status, body, _ = await proxied(gate, "GET", "/proxy/flaky", headers={"Retries": "1"})

    # The fake refuses a nonce it has seen: a replayed signature would be a 401 here.
    assert status == 200, body
    assert [checked.verdict for checked in fake.checked] == ["ok", "ok"]


async def test_post_with_json_body_is_signed(gate: Authgate, api: tuple[OAuth1Api, int]) -> None:
    fake, port = api
    await connect(gate, port)
    payload = orjson.dumps({"status": "hello & goodbye", "n": 1})
    status, body, _ = await proxied(
        gate,
        "POST",
        "/proxy/1.1/statuses/update.json?trim_user=true",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    received = fake.last().request
    assert (received.method, received.body) == ("POST", payload)
    assert received.header("Content-Type") == "application/json"
    assert orjson.loads(body)["echo"] == payload.decode()


async def test_wrong_token_secret_gets_the_providers_401_unchanged(
    gate: Authgate, api: tuple[OAuth1Api, int]
) -> None:
    fake, port = api
    await connect(gate, port, token_secret="not-the-secret-the-provider-knows")
    status, body, headers = await proxied(gate, "GET", "/proxy/me?fields=id")
    assert status == 401
    assert fake.last().verdict == "invalid signature"
    assert orjson.loads(body) == {"errors": [{"message": "invalid signature"}]}
    assert "X-Authgate-Error" not in headers


async def test_nango_proxy_authorization_still_overrides_the_signature(
    gate: Authgate, api: tuple[OAuth1Api, int]
) -> None:
    fake, port = api
    await connect(gate, port)
    own = 'OAuth oauth_consumer_key="mine"'
    status, _, _ = await proxied(
        gate, "GET", "/proxy/me", headers={"Nango-Proxy-Authorization": own}
    )
    assert status == 401
    assert fake.last().request.header("Authorization") == own


async def test_a_signature_method_we_cannot_produce_is_authgates_400(
    gate: Authgate, api: tuple[OAuth1Api, int]
) -> None:
    fake, port = api
    await connect(gate, port, "fake-oauth1-rsa")
    response = await gate.proxy(
        "GET", "/proxy/me", connection_id="user-1", provider_config_key="tw"
    )
    assert response.status == 400
    assert response.headers["X-Authgate-Error"] == "unsupported_auth"
    assert "RSA-SHA1" in (await json_of(response))["error"]["message"]
    assert fake.checked == []


async def test_query_characters_sent_raw_are_signed_as_the_provider_decodes_them(
    gate: Authgate, api: tuple[OAuth1Api, int]
) -> None:
    fake, port = api
    await connect(gate, port)
    target = "/search?tags=[a]|{b}&pct=100%&q=caf%C3%A9"
    status, body, _ = await proxied(gate, "GET", "/proxy" + target)
    assert (status, fake.last().verdict) == (200, "ok"), body
    assert fake.last().request.raw_path == "/api" + target
