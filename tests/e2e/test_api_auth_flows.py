"""The typed-credential flows end to end: `POST /api-auth/api-key|basic/{key}` and
`POST /oauth2/auth/{key}`, through a real `authgate serve` on both store backends.

The provider is a fake on a real socket (`TypedCredentialsApi`) that checks what a real
one would: the API key header, Basic credentials and the JSON body of a POST
verification, the client of a client-credentials grant. A flow that succeeds here sent
the provider exactly the right thing, and the stored connection then works through the
proxy. Webhooks go to a real receiver through the real sender.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import jwt.algorithms
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from credentials.environment_settings import EnvironmentSettingsStore
from credentials.models import Connection, Environment
from credentials.webhooks import SenderSettings, WebhookSender
from tests.e2e.conftest import Authgate, Factory, json_of
from tests.e2e.management_calls import assert_error, call
from tests.e2e.webhook_receiver import WebhookReceiver, serve_receiver
from tests.log_scan import SecretRegistry

API_KEY = "typed-api-key-0123456789"
USERNAME = "ann@example.com"
PASSWORD = "typed-password-9876543210"
CLIENT_ID = "typed-client"
CLIENT_SECRET = "typed-client-secret-abcdef"
HMAC_KEY = "typed-hmac-key-0123456789abcdef"
PUBLIC_KEY = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
VERIFY_DATA = {"query": "{ viewer { id } }"}
_CLIENT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CLIENT_PUBLIC_KEY = _CLIENT_KEY.public_key()
CLIENT_JWK = jwt.algorithms.RSAAlgorithm.to_jwk(_CLIENT_KEY)

PROVIDERS = """
typed-key:
    display_name: Typed Key
    docs: https://docs.example.com/typed-key
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
        headers:
            x-api-key: ${apiKey}
        verification:
            method: GET
            endpoints: [/v1/missing, /v1/me]
typed-basic:
    display_name: Typed Basic
    docs: https://docs.example.com/typed-basic
    auth_mode: BASIC
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
        verification:
            method: POST
            base_url_override: http://127.0.0.1:${connectionConfig.port}/graph
            endpoints: [/check]
            headers:
                x-purpose: verification
            data:
                query: '{ viewer { id } }'
untested-key:
    display_name: Untested Key
    docs: https://docs.example.com/untested-key
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
        headers:
            x-api-key: ${apiKey}
typed-cc:
    display_name: Typed Client Credentials
    docs: https://docs.example.com/typed-cc
    auth_mode: OAUTH2_CC
    token_url: http://127.0.0.1:${connectionConfig.port}/oauth/token
    token_params:
        audience: typed-api
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
open-api:
    display_name: Open API
    docs: https://docs.example.com/open-api
    auth_mode: NONE
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/open
typed-cc-jwt:
    display_name: Typed Client Assertion
    docs: https://docs.example.com/typed-cc-jwt
    auth_mode: OAUTH2_CC
    token_url: http://127.0.0.1:${connectionConfig.port}/oauth/token
    token_request_auth_method: private_key_jwt
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
"""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TypedCredentialsApi:
    """Accepts only the right credentials; records every request."""

    seen: list[Seen] = field(default_factory=list)
    grants: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    app: web.Application = field(default_factory=web.Application)

    def __post_init__(self) -> None:
        self.app.router.add_get("/v1/me", self._me)
        self.app.router.add_post("/graph/check", self._check)
        self.app.router.add_post("/oauth/token", self._token)
        self.app.router.add_route("*", "/{tail:.*}", self._other)

    def paths(self) -> list[str]:
        return [f"{seen.method} {seen.path}" for seen in self.seen]

    async def _record(self, request: web.Request) -> Seen:
        seen = Seen(request.method, request.path, dict(request.headers), await request.read())
        self.seen.append(seen)
        return seen

    async def _me(self, request: web.Request) -> web.Response:
        seen = await self._record(request)
        if seen.headers.get("x-api-key") != API_KEY:
            return web.json_response(
                {"message": f"bad key {seen.headers.get('x-api-key')}"}, status=401
            )
        return web.json_response({"id": "me"})

    async def _check(self, request: web.Request) -> web.Response:
        seen = await self._record(request)
        expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        if seen.headers.get("Authorization") != expected:
            return web.json_response({"message": "who are you"}, status=403)
        if (
            seen.headers.get("x-purpose") != "verification"
            or orjson.loads(seen.body) != VERIFY_DATA
        ):
            return web.json_response({"message": "bad request"}, status=400)
        return web.json_response({"viewer": {"id": "1"}})

    async def _token(self, request: web.Request) -> web.Response:
        await self._record(request)
        form = {
            key: value for key, value in (await request.post()).items() if isinstance(value, str)
        }
        self.grants.append(form)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if not self._client_proven(form, str(request.url)):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"cc-token-{uuid.uuid4().hex}"
        self.issued.append(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3600, "token_type": "bearer"}
        )

    def _client_proven(self, form: dict[str, str], token_url: str) -> bool:
        """The client's secret, or an assertion signed with its private key."""
        if "client_assertion" not in form:
            return (form.get("client_id"), form.get("client_secret")) == (CLIENT_ID, CLIENT_SECRET)
        try:
            claims = jwt.decode(
                form["client_assertion"],
                CLIENT_PUBLIC_KEY,
                algorithms=["RS256"],
                audience=token_url,
                issuer=CLIENT_ID,
            )
        except jwt.PyJWTError:
            return False
        return claims["sub"] == CLIENT_ID and form.get("client_id") == CLIENT_ID

    async def _other(self, request: web.Request) -> web.Response:
        seen = await self._record(request)
        bearer = seen.headers.get("Authorization", "").removeprefix("Bearer ")
        if request.path.startswith("/open/api/"):
            return web.json_response(
                {"ok": True, "unauthenticated": "Authorization" not in seen.headers}
            )
        if request.path.startswith("/api/") and (
            bearer in self.issued or seen.headers.get("x-api-key") == API_KEY
        ):
            return web.json_response({"ok": True})
        return web.json_response({"message": "not here"}, status=404)


@dataclass
class Flows:
    gate: Authgate
    api: TypedCredentialsApi
    port: int

    async def environment(self) -> Environment:
        environment = await self.gate.core.store.get_environment("dev")
        assert environment is not None
        return environment

    async def session_token(self, body: dict[str, Any] | None = None) -> str:
        status, answer = await call(
            self.gate, "POST", "/connect/sessions", body=body or {"end_user": {"id": "user-1"}}
        )
        assert status == 201, answer
        token: str = answer["data"]["token"]
        return token

    def path(self, route: str, key: str, **query: str) -> str:
        return str(
            URL.build(path=f"{route}/{key}", query={"params[port]": str(self.port), **query})
        )

    async def post(
        self,
        route: str,
        key: str,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        **query: str,
    ) -> tuple[int, Any]:
        return await call(
            self.gate,
            "POST",
            self.path(route, key, **query),
            body=body,
            auth=False,
            headers=headers,
        )

    async def stored(self, key: str, connection_id: str) -> Connection:
        environment = await self.environment()
        connection = await self.gate.core.store.get_connection(environment.id, key, connection_id)
        assert connection is not None
        return connection

    async def count(self) -> int:
        environment = await self.environment()
        return len(await self.gate.core.store.list_connections(environment.id))


@pytest.fixture
async def flows(
    make_authgate: Factory, tmp_path: Path, secret_registry: SecretRegistry
) -> AsyncIterator[Flows]:
    api = TypedCredentialsApi()
    server = TestServer(api.app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    providers = tmp_path / "typed-providers.yaml"
    providers.write_text(PROVIDERS)
    gate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    for key in ("typed-key", "typed-basic", "untested-key", "typed-cc", "typed-cc-jwt", "open-api"):
        status, answer = await call(
            gate, "POST", "/integrations", body={"unique_key": key, "provider": key}
        )
        assert status == 200, answer
    typed = {API_KEY: "API key", PASSWORD: "password", CLIENT_SECRET: "secret", CLIENT_JWK: "key"}
    for value, name in typed.items():
        secret_registry.add(value, f"typed {name}")
    yield Flows(gate, api, server.port)
    for token in api.issued:
        secret_registry.add(token, "issued client-credentials token")
    await server.close()


async def proxied(flows: Flows, key: str, connection_id: str) -> tuple[int, Any]:
    response = await flows.gate.proxy(
        "GET", "/proxy/api/things", connection_id=connection_id, provider_config_key=key
    )
    return response.status, await json_of(response)


# --- API key ---------------------------------------------------------------------------


async def test_an_api_key_is_verified_stored_and_works_through_the_proxy(flows: Flows) -> None:
    token = await flows.session_token({"end_user": {"id": "user-9"}, "tags": {"plan": "pro"}})

    status, answer = await flows.post(
        "/api-auth/api-key", "typed-key", {"apiKey": API_KEY}, connect_session_token=token
    )

    assert status == 200, answer
    assert set(answer) == {"providerConfigKey", "connectionId"}
    assert answer["providerConfigKey"] == "typed-key"
    uuid.UUID(answer["connectionId"], version=4)
    # Every listed endpoint is tried in order; the first 2xx passes.
    assert flows.api.paths() == ["GET /v1/missing", "GET /v1/me"]
    assert flows.api.seen[1].headers["x-api-key"] == API_KEY
    connection = await flows.stored("typed-key", answer["connectionId"])
    assert connection.credentials == {"type": "API_KEY", "apiKey": API_KEY}
    assert connection.connection_config == {"port": str(flows.port)}
    assert connection.end_user is not None
    assert connection.end_user["id"] == "user-9"
    assert connection.tags["plan"] == "pro"
    assert await proxied(flows, "typed-key", answer["connectionId"]) == (200, {"ok": True})


async def test_a_refused_api_key_is_not_stored_and_says_why(flows: Flows) -> None:
    token = await flows.session_token()
    wrong = "typed-wrong-key-000000"

    status, answer = await flows.post(
        "/api-auth/api-key", "typed-key", {"apiKey": wrong}, connect_session_token=token
    )

    assert_error(status, answer, 400, "connection_test_failed")
    message = answer["error"]["message"]
    assert "GET /v1/missing answered 404" in message
    assert "GET /v1/me answered 401" in message
    # The provider echoed the key in its body; neither it nor the body reaches the answer.
    assert wrong not in message
    assert "bad key" not in message
    assert await flows.count() == 0


async def test_a_provider_without_verification_accepts_untested(flows: Flows) -> None:
    token = await flows.session_token()

    status, answer = await flows.post(
        "/api-auth/api-key",
        "untested-key",
        {"apiKey": "anything-goes"},
        connect_session_token=token,
    )

    assert status == 200, answer
    assert flows.api.seen == []
    connection = await flows.stored("untested-key", answer["connectionId"])
    assert connection.credentials["apiKey"] == "anything-goes"


# --- Basic -----------------------------------------------------------------------------


async def test_basic_credentials_are_verified_by_a_post_with_data(flows: Flows) -> None:
    token = await flows.session_token()

    status, answer = await flows.post(
        "/api-auth/basic",
        "typed-basic",
        {"username": USERNAME, "password": PASSWORD},
        connect_session_token=token,
    )

    assert status == 200, answer
    [check] = flows.api.seen
    assert (check.method, check.path) == ("POST", "/graph/check")
    assert check.headers["Content-Type"] == "application/json"
    connection = await flows.stored("typed-basic", answer["connectionId"])
    assert connection.credentials == {"type": "BASIC", "username": USERNAME, "password": PASSWORD}


async def test_wrong_basic_credentials_fail_the_test(flows: Flows) -> None:
    token = await flows.session_token()

    status, answer = await flows.post(
        "/api-auth/basic",
        "typed-basic",
        {"username": USERNAME, "password": "not-the-password"},
        connect_session_token=token,
    )

    assert_error(status, answer, 400, "connection_test_failed")
    assert "POST /graph/check answered 403" in answer["error"]["message"]
    assert await flows.count() == 0


# --- client credentials ----------------------------------------------------------------


async def test_client_credentials_are_granted_once_and_work_through_the_proxy(
    flows: Flows,
) -> None:
    token = await flows.session_token(
        {
            "end_user": {"id": "user-1"},
            "integrations_config_defaults": {
                "typed-cc": {"authorization_params": {"audience": "from-session"}}
            },
        }
    )

    status, answer = await flows.post(
        "/oauth2/auth",
        "typed-cc",
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        connect_session_token=token,
    )

    assert status == 200, answer
    [grant] = flows.api.grants
    assert grant["grant_type"] == "client_credentials"
    # The session's authorization_params win over the provider's token_params.
    assert grant["audience"] == "from-session"
    connection = await flows.stored("typed-cc", answer["connectionId"])
    credentials = connection.credentials
    assert credentials["type"] == "OAUTH2_CC"
    assert credentials["token"] == flows.api.issued[0]
    assert (credentials["client_id"], credentials["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
    assert "expires_at" in credentials
    assert connection.connection_config["authorization_params"] == {"audience": "from-session"}
    assert await proxied(flows, "typed-cc", answer["connectionId"]) == (200, {"ok": True})


async def test_a_client_may_prove_itself_with_a_private_key_instead_of_a_secret(
    flows: Flows,
) -> None:
    token = await flows.session_token()

    status, answer = await flows.post(
        "/oauth2/auth",
        "typed-cc-jwt",
        {"client_id": CLIENT_ID, "client_private_key": CLIENT_JWK},
        connect_session_token=token,
    )

    assert status == 200, answer
    [grant] = flows.api.grants
    assert "client_secret" not in grant
    connection = await flows.stored("typed-cc-jwt", answer["connectionId"])
    assert connection.credentials["client_private_key"] == CLIENT_JWK
    assert await proxied(flows, "typed-cc-jwt", answer["connectionId"]) == (200, {"ok": True})


async def test_a_refused_client_is_a_grant_error_and_nothing_is_stored(flows: Flows) -> None:
    token = await flows.session_token()

    status, answer = await flows.post(
        "/oauth2/auth",
        "typed-cc",
        {"client_id": CLIENT_ID, "client_secret": "wrong-secret-value"},
        connect_session_token=token,
    )

    assert_error(status, answer, 400, "client_credentials_fetch_error")
    assert "invalid_client" in answer["error"]["message"]
    assert "wrong-secret-value" not in answer["error"]["message"]
    assert await flows.count() == 0


# --- unauthenticated ------------------------------------------------------------------


async def test_an_unauthenticated_connection_holds_only_its_config(flows: Flows) -> None:
    token = await flows.session_token()
    path = flows.path("/auth/unauthenticated", "open-api", connect_session_token=token)

    # As the SDK's `create` sends it: the JSON content type, and no body at all.
    status, answer = await call(
        flows.gate, "POST", path, auth=False, headers={"Content-Type": "application/json"}
    )

    assert status == 200, answer
    connection = await flows.stored("open-api", answer["connectionId"])
    assert connection.credentials == {}
    assert connection.connection_config == {"port": str(flows.port)}
    assert await proxied(flows, "open-api", answer["connectionId"]) == (
        200,
        {"ok": True, "unauthenticated": True},
    )
    status, answer = await flows.post(
        "/auth/unauthenticated", "open-api", {"apiKey": "x"}, connect_session_token=token
    )
    assert_error(status, answer, 400, "invalid_body")


# --- who may call, and with what ---------------------------------------------------------


async def test_a_reconnect_session_overrides_the_existing_connection(flows: Flows) -> None:
    first = await flows.session_token()
    status, created = await flows.post(
        "/api-auth/api-key",
        "untested-key",
        {"apiKey": "old-key-value"},
        connect_session_token=first,
    )
    assert status == 200, created
    status, reconnect = await call(
        flows.gate,
        "POST",
        "/connect/sessions/reconnect",
        body={"connection_id": created["connectionId"], "integration_id": "untested-key"},
    )
    assert status == 201, reconnect

    status, answer = await flows.post(
        "/api-auth/api-key",
        "untested-key",
        {"apiKey": "new-key-value"},
        connect_session_token=reconnect["data"]["token"],
    )

    assert status == 200, answer
    assert answer["connectionId"] == created["connectionId"]
    assert await flows.count() == 1
    connection = await flows.stored("untested-key", created["connectionId"])
    assert connection.credentials["apiKey"] == "new-key-value"


async def test_public_key_with_and_without_hmac(flows: Flows) -> None:
    environment = await flows.environment()
    settings = EnvironmentSettingsStore(flows.gate.core.store)
    await settings.update(environment.id, public_key=PUBLIC_KEY)
    body = {"apiKey": "public-key-caller"}

    status, answer = await flows.post(
        "/api-auth/api-key", "untested-key", body, public_key=PUBLIC_KEY, connection_id="mine-1"
    )
    assert (status, answer) == (
        200,
        {"providerConfigKey": "untested-key", "connectionId": "mine-1"},
    )

    await settings.update(environment.id, hmac_enabled=True, hmac_key=HMAC_KEY)
    status, answer = await flows.post(
        "/api-auth/api-key", "untested-key", body, public_key=PUBLIC_KEY, connection_id="mine-2"
    )
    assert_error(status, answer, 400, "missing_hmac")
    status, answer = await flows.post(
        "/api-auth/api-key",
        "untested-key",
        body,
        public_key=PUBLIC_KEY,
        connection_id="mine-2",
        hmac="0" * 64,
    )
    assert_error(status, answer, 400, "invalid_hmac")
    digest = hmac.new(HMAC_KEY.encode(), b"untested-key:mine-2", hashlib.sha256).hexdigest()
    status, answer = await flows.post(
        "/api-auth/api-key",
        "untested-key",
        body,
        public_key=PUBLIC_KEY,
        connection_id="mine-2",
        hmac=digest,
    )
    assert status == 200, answer
    assert await flows.count() == 2


async def test_refusals_name_the_problem(flows: Flows) -> None:
    token = await flows.session_token(
        {"end_user": {"id": "u"}, "allowed_integrations": ["typed-key"]}
    )
    key_body = {"apiKey": API_KEY}
    cases: list[tuple[str, str, Any, dict[str, str], int, str]] = [
        ("/api-auth/api-key", "typed-key", key_body, {}, 401, "missing_public_key"),
        (
            "/api-auth/api-key",
            "typed-key",
            key_body,
            {"connect_session_token": "nope"},
            401,
            "invalid_connect_session_token_format",
        ),
        (
            "/api-auth/api-key",
            "untested-key",
            key_body,
            {"connect_session_token": token},
            400,
            "integration_not_allowed",
        ),
        (
            "/api-auth/basic",
            "typed-key",
            {"username": "a", "password": "b"},
            {"connect_session_token": token},
            400,
            "invalid_auth_mode",
        ),
        (
            "/api-auth/api-key",
            "typed-key",
            {"apiKey": ""},
            {"connect_session_token": token},
            400,
            "invalid_body",
        ),
        (
            "/api-auth/api-key",
            "typed-key",
            {"apiKey": API_KEY, "extra": 1},
            {"connect_session_token": token},
            400,
            "invalid_body",
        ),
        (
            "/api-auth/api-key",
            "typed-key",
            ["not", "an", "object"],
            {"connect_session_token": token},
            400,
            "invalid_body",
        ),
        (
            "/api-auth/api-key",
            "nowhere",
            key_body,
            {"connect_session_token": token},
            400,
            "integration_not_allowed",
        ),
        (
            "/oauth2/auth",
            "typed-cc",
            {"client_id": CLIENT_ID},
            {"public_key": "unknown"},
            400,
            "invalid_body",
        ),
    ]
    for route, key, body, query, expected_status, code in cases:
        path = flows.path(route, key, **query)
        status, answer = await call(flows.gate, "POST", path, body=body, auth=False)
        assert_error(status, answer, expected_status, code)
    assert flows.api.seen == []
    assert await flows.count() == 0


async def test_bad_bodies_name_the_offending_field(flows: Flows) -> None:
    token = await flows.session_token()

    status, answer = await flows.post(
        "/api-auth/basic", "typed-basic", {"username": USERNAME}, connect_session_token=token
    )

    assert_error(status, answer, 400, "invalid_body")
    assert [error["path"] for error in answer["error"]["errors"]] == [["password"]]


async def test_only_a_json_body_is_accepted(flows: Flows) -> None:
    # A cross-site HTML form could send this one without asking the browser first.
    token = await flows.session_token()
    status, answer = await call(
        flows.gate,
        "POST",
        flows.path("/api-auth/api-key", "untested-key", connect_session_token=token),
        raw=b"apiKey=from-a-form",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=False,
    )
    assert_error(status, answer, 415, "invalid_content_type")
    assert await flows.count() == 0


# --- browsers on another origin --------------------------------------------------------


async def test_a_page_on_another_origin_may_call_the_flows(flows: Flows) -> None:
    url = URL(
        str(flows.gate.url).rstrip("/") + flows.path("/api-auth/api-key", "typed-key"), encoded=True
    )
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with flows.gate.session.options(url, headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "POST"
        assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in response.headers

    status_url = URL(str(flows.gate.url).rstrip("/") + "/environment/settings")
    async with flows.gate.session.options(
        status_url, headers={**preflight, "Access-Control-Request-Method": "GET"}
    ) as response:
        # Secret-key routes are not for browsers: no permission, so the browser refuses.
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers

    token = await flows.session_token()
    async with flows.gate.session.post(
        url.update_query(connect_session_token=token),
        json={"apiKey": "wrong-key-for-cors"},
        headers={"Origin": "https://app.example.com"},
    ) as response:
        # Errors too must be readable by the page, or the SDK cannot report them.
        assert response.status == 400
        assert response.headers["Access-Control-Allow-Origin"] == "*"


# --- auth webhooks -----------------------------------------------------------------------


@pytest.fixture
async def hooks(flows: Flows) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    async with serve_receiver(receiver) as base_url:
        environment = await flows.environment()
        await EnvironmentSettingsStore(flows.gate.core.store).update(
            environment.id, webhook_url=base_url + "/hooks", webhook_secret="typed-webhook-secret"
        )
        assert flows.gate.core.webhooks is not None
        sender: WebhookSender = flows.gate.core.webhooks.sender(
            SenderSettings(poll_interval=3600.0)
        )
        await sender.start()
        try:
            yield receiver
        finally:
            await sender.close()


async def test_outcomes_are_sent_as_auth_webhooks(flows: Flows, hooks: WebhookReceiver) -> None:
    token = await flows.session_token({"end_user": {"id": "user-5"}})

    failed, answer = await flows.post(
        "/api-auth/api-key",
        "typed-key",
        {"apiKey": "wrong-key-webhook"},
        connect_session_token=token,
    )
    created, connected = await flows.post(
        "/api-auth/api-key", "typed-key", {"apiKey": API_KEY}, connect_session_token=token
    )

    assert (failed, created) == (400, 200), (answer, connected)
    deliveries = await hooks.wait_for(2)
    bodies = sorted((delivery.json() for delivery in deliveries), key=lambda body: body["success"])
    failure, success = bodies
    assert failure["type"] == "auth"
    assert failure["operation"] == "creation"
    assert failure["error"]["type"] == "connection_test_failed"
    assert success["connectionId"] == connected["connectionId"]
    assert success["authMode"] == "API_KEY"
    for delivery in deliveries:
        assert API_KEY.encode() not in delivery.body
        assert b"wrong-key-webhook" not in delivery.body
