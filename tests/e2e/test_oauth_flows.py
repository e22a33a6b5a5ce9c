"""The OAuth 2.0 and OAuth 1.0a flows end to end, on real sockets, on both store backends.

The browser is played by an HTTP client that follows each redirect by hand: authgate's
`/oauth/connect` sends it to the fake provider (tests/e2e/oauth_fakes.py), whose consent
screen sends it back to `/oauth/callback`, which answers the popup's last page. The
fakes check what real providers check (client authentication, single-use codes, the
redirect URI, PKCE against the challenge, OAuth 1.0a signatures), so a flow that
succeeds here did everything right on the wire.

Most tests run the management app alone (`build_management_app`) with recording
implementations of the two interfaces the flows report through (`PUBLISHER`,
`AUTH_EVENTS`), set before the app starts. Tests that end with a proxied call run the
whole `authgate serve` (`make_authgate`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer, unused_port
from yarl import URL

from authgate.serving import build_management_app
from credentials.environment_settings import EnvironmentSettingsStore
from credentials.jsonlog import JsonFormatter
from credentials.models import Connection, Environment
from credentials.runtime import CoreServices
from credentials.store import SqlStore
from management.callback_page import CONTENT_SECURITY_POLICY, SCRIPT
from management.request_context import AUTH_EVENTS, CORE, PUBLISHER
from management.settings import ManagementSettings
from tests.e2e.conftest import TEST_PROVIDERS, Authgate, Factory, settings_env
from tests.e2e.oauth_fakes import OAuth1Provider, OAuth2Provider
from tests.log_scan import SecretRegistry

CLIENT_ID = "authgate-client-id"
CLIENT_SECRET = "client-secret-for-flows-e2e"
CONSUMER_KEY = "consumer-key-flows-e2e"
CONSUMER_SECRET = "consumer-secret-flows-e2e"
HMAC_KEY = "hmac-key-for-flows-e2e-0123456789"
PUBLIC_KEY = "0b7a3f4e-5c1d-4e2f-9a8b-7c6d5e4f3a2b"

FLOW_PROVIDERS = """
fake-oauth2:
    display_name: Fake OAuth2
    docs: https://docs.example.com/fake-oauth2
    auth_mode: OAUTH2
    authorization_url: http://127.0.0.1:{oauth2}/oauth/authorize
    token_url: http://127.0.0.1:{oauth2}/oauth/token
    token_response_metadata: [team.id, is_admin]
    proxy:
        base_url: http://127.0.0.1:{oauth2}
fake-oauth2-basic:
    display_name: Fake OAuth2, Basic client auth, JSON, no PKCE
    docs: https://docs.example.com/fake-oauth2-basic
    auth_mode: OAUTH2
    authorization_url: http://127.0.0.1:{oauth2}/oauth/authorize
    token_url: http://127.0.0.1:{oauth2}/oauth/token
    token_request_auth_method: basic
    body_format: json
    disable_pkce: true
    scope_separator: ","
    authorization_params:
        prompt: consent
        audience: ${{connectionConfig.audience}}||default-audience
fake-oauth2-tenant:
    display_name: Fake OAuth2 per tenant
    docs: https://docs.example.com/fake-oauth2-tenant
    auth_mode: OAUTH2
    authorization_url: http://127.0.0.1:{oauth2}/t/${{connectionConfig.tenant}}/oauth/authorize
    token_url: http://127.0.0.1:{oauth2}/t/${{connectionConfig.tenant}}/oauth/token
    proxy:
        base_url: http://127.0.0.1:{oauth2}
fake-oauth2-remote-token:
    display_name: Fake OAuth2 whose token endpoint is a loopback name
    docs: https://docs.example.com/fake-oauth2-remote-token
    auth_mode: OAUTH2
    authorization_url: https://auth.example.com/authorize
    token_url: http://localhost:{oauth2}/oauth/token
fake-oauth2-private-consent:
    display_name: Fake OAuth2 whose consent page is on a loopback address
    docs: https://docs.example.com/fake-oauth2-private-consent
    auth_mode: OAUTH2
    authorization_url: http://127.0.0.1:{oauth2}/oauth/authorize
    token_url: https://auth.example.com/token
fake-oauth1-flow:
    display_name: Fake OAuth1 flow
    docs: https://docs.example.com/fake-oauth1-flow
    auth_mode: OAUTH1
    request_url: http://127.0.0.1:{oauth1}/oauth1/request_token
    request_params:
        x_auth_access_type: read
    authorization_url: http://127.0.0.1:{oauth1}/oauth1/authorize
    token_url: http://127.0.0.1:{oauth1}/oauth1/access_token
    proxy:
        base_url: http://127.0.0.1:{oauth1}/api1
"""


# --- recording implementations of the two reporting interfaces ---------------------------


@dataclass
class RecordingPublisher:
    successes: list[tuple[str, str, str, bool]] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)

    async def publish_success(
        self,
        ws_client_id: str,
        provider_config_key: str,
        connection_id: str,
        *,
        is_pending: bool = False,
    ) -> None:
        self.successes.append((ws_client_id, provider_config_key, connection_id, is_pending))

    async def publish_error(self, ws_client_id: str, error_type: str, error_desc: str) -> None:
        self.errors.append((ws_client_id, error_type, error_desc))


@dataclass
class RecordingEvents:
    created: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    async def connection_created(
        self,
        environment: Environment,
        connection: Connection,
        auth_mode: str,
        *,
        operation: Literal["creation", "override"],
    ) -> None:
        self.created.append(
            (
                environment.name,
                connection.provider_config_key,
                connection.connection_id,
                auth_mode,
                operation,
            )
        )

    async def connection_creation_failed(self, environment: Environment, **details: Any) -> None:
        self.failed.append({"environment": environment.name, **details})


# --- the browser --------------------------------------------------------------------------


@dataclass
class Hop:
    url: str
    status: int
    location: str | None
    set_cookie: list[str]


@dataclass
class Popup:
    """Where the popup went, and the page it ended on."""

    hops: list[Hop]
    status: int
    text: str
    headers: dict[str, str]

    @property
    def provider_query(self) -> dict[str, list[str]]:
        """The query authgate sent the browser to the provider with."""
        assert self.hops[0].location is not None
        return parse_qs(urlsplit(self.hops[0].location).query, keep_blank_values=True)

    def result(self) -> dict[str, Any]:
        """The result the callback page hands its script."""
        found = re.search(
            r'<script type="application/json" id="authgate-oauth-result">(.*?)</script>',
            self.text,
            re.S,
        )
        assert found is not None, self.text
        value: dict[str, Any] = json.loads(found.group(1))
        return value


async def popup(
    session: aiohttp.ClientSession, url: str | URL, *, stop_at: str | None = None
) -> Popup:
    """Open `url` and follow redirects by hand, as a browser would (at most 6 hops).
    With `stop_at`, stop before requesting a URL that starts with it."""
    hops: list[Hop] = []
    target = URL(str(url), encoded=True)
    for _ in range(6):
        async with session.get(target, allow_redirects=False) as response:
            text = await response.text()
            location = response.headers.get("Location")
            hops.append(
                Hop(
                    str(target),
                    response.status,
                    location,
                    response.headers.getall("Set-Cookie", []),
                )
            )
            if response.status not in (301, 302, 303, 307, 308) or location is None:
                return Popup(hops, response.status, text, dict(response.headers))
        if stop_at is not None and location.startswith(stop_at):
            return Popup(hops, response.status, text, dict(response.headers))
        target = URL(location, encoded=True)
    raise AssertionError(f"too many redirects: {[hop.url for hop in hops]}")


# --- the deployment under test ------------------------------------------------------------


@dataclass
class Gate:
    """authgate's management API on a real port, its store, and what it reported."""

    url: URL
    secret_key: str
    session: aiohttp.ClientSession
    core: CoreServices
    publisher: RecordingPublisher | None
    events: RecordingEvents | None
    oauth2: OAuth2Provider
    oauth1: OAuth1Provider

    @property
    def store(self) -> SqlStore:
        return self.core.store

    async def environment(self) -> Environment:
        environment = await self.store.get_environment("dev")
        assert environment is not None
        return environment

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.secret_key}"}
        async with self.session.request(
            method, self.url.with_path(path), json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    async def integration(self, key: str, provider: str, **credentials: str) -> None:
        client = {"type": "OAUTH2", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        if provider.startswith("fake-oauth1"):
            client = {"type": "OAUTH1", "client_id": CONSUMER_KEY, "client_secret": CONSUMER_SECRET}
        body = {"unique_key": key, "provider": provider, "credentials": {**client, **credentials}}
        status, answer = await self.api("POST", "/integrations", body)
        assert status == 200, answer

    async def connect_session(self, body: dict[str, Any] | None = None, *, path: str = "") -> str:
        session = body if body is not None else {"end_user": {"id": "user-1"}}
        status, answer = await self.api("POST", "/connect/sessions" + path, session)
        assert status == 201, answer
        token: str = answer["data"]["token"]
        return token

    def connect_url(self, key: str, **query: str) -> URL:
        return self.url.with_path(f"/oauth/connect/{key}").with_query(query)

    async def connection(self, key: str, connection_id: str) -> Connection:
        environment = await self.environment()
        connection = await self.store.get_connection(environment.id, key, connection_id)
        assert connection is not None, f"no connection {connection_id!r}"
        return connection

    async def settings(self, **changes: Any) -> None:
        environment = await self.environment()
        await EnvironmentSettingsStore(self.store).update(environment.id, **changes)


def write_providers(directory: Path, oauth2_port: int, oauth1_port: int) -> Path:
    path = directory / "flow-providers.yaml"
    flows = FLOW_PROVIDERS.format(oauth2=oauth2_port, oauth1=oauth1_port)
    path.write_text(TEST_PROVIDERS + flows)
    return path


@pytest.fixture
async def fakes(
    secret_registry: SecretRegistry,
) -> AsyncIterator[tuple[OAuth2Provider, OAuth1Provider, int, int]]:
    oauth2 = OAuth2Provider(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_extra={"team": {"id": "T-42", "name": "Team"}, "is_admin": True},
    )
    oauth1 = OAuth1Provider(consumer_key=CONSUMER_KEY, consumer_secret=CONSUMER_SECRET)
    servers = [TestServer(oauth2.app, host="127.0.0.1"), TestServer(oauth1.app, host="127.0.0.1")]
    for server in servers:
        await server.start_server()
    ports = [server.port for server in servers]
    assert ports[0] is not None
    assert ports[1] is not None
    yield oauth2, oauth1, ports[0], ports[1]
    for server in servers:
        await server.close()
    # The codes and tokens the fakes issued are secrets no name gives away.
    for value in [*oauth2.issued_secrets(), *oauth1.issued_secrets()]:
        secret_registry.add(value, "issued by a fake OAuth provider")


GateFactory = Callable[..., Awaitable[Gate]]


@pytest.fixture
async def make_gate(
    tmp_path: Path,
    database_url: str,
    fakes: tuple[OAuth2Provider, OAuth1Provider, int, int],
) -> AsyncIterator[GateFactory]:
    """A management app with recording reporters (unless `reporters=False`)."""
    oauth2, oauth1, oauth2_port, oauth1_port = fakes
    providers = write_providers(tmp_path, oauth2_port, oauth1_port)
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(*, reporters: bool = True, **overrides: str) -> Gate:
        port = unused_port()
        environ = settings_env(
            tmp_path,
            database_url,
            AUTHGATE_PROVIDERS_FILE=str(providers),
            AUTHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}",
            **overrides,
        )
        app = await build_management_app(ManagementSettings.from_env(environ))
        publisher = RecordingPublisher() if reporters else None
        events = RecordingEvents() if reporters else None
        if publisher is not None and events is not None:
            app[PUBLISHER] = publisher
            app[AUTH_EVENTS] = events
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        return Gate(
            url=URL(f"http://127.0.0.1:{port}/"),
            secret_key=environ["AUTHGATE_SECRET_KEY"],
            session=session,
            core=app[CORE],
            publisher=publisher,
            events=events,
            oauth2=oauth2,
            oauth1=oauth1,
        )

    yield start
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close()


@pytest.fixture
async def gate(make_gate: GateFactory) -> Gate:
    return await make_gate()


def error_of(page: Popup) -> tuple[str, str]:
    result = page.result()
    assert result["ok"] is False, result
    return result["errorType"], result["message"]


def state_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["state"][0]


# --- the OAuth 2.0 flow ---------------------------------------------------------------------


async def test_oauth2_flow_stores_the_connection(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2", scopes="read,write")
    token = await gate.connect_session(
        {"end_user": {"id": "user-7", "email": "u7@example.com"}, "tags": {"plan": "pro"}}
    )

    page = await popup(gate.session, gate.connect_url("crm", connect_session_token=token))

    assert page.status == 200, page.text
    assert page.result() == {"ok": True}
    query = page.provider_query
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == ["read write"]
    assert query["redirect_uri"] == [str(gate.url.with_path("/oauth/callback"))]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["state"][0]) >= 43
    assert gate.oauth2.pkce_verified == 1
    [exchange] = gate.oauth2.exchanges
    assert (exchange.verdict, exchange.client_auth) == ("ok", "body")
    listed = await gate.store.list_connections((await gate.environment()).id)
    [connection] = [await gate.connection("crm", item.connection_id) for item in listed]
    credentials = connection.credentials
    assert credentials["type"] == "OAUTH2"
    assert credentials["access_token"].startswith("at-")
    assert credentials["refresh_token"].startswith("rt-")
    assert "expires_at" in credentials
    assert credentials["raw"]["team"]["id"] == "T-42"
    assert connection.connection_config == {"team.id": "T-42", "is_admin": True}
    assert connection.end_user is not None
    assert connection.end_user["id"] == "user-7"
    assert connection.tags["plan"] == "pro"
    assert connection.tags["end_user_id"] == "user-7"


@pytest.fixture
async def served(
    make_authgate: Factory,
    tmp_path: Path,
    fakes: tuple[OAuth2Provider, OAuth1Provider, int, int],
) -> AsyncIterator[Gate]:
    """The whole `authgate serve` (proxy in front), its callback URL set to itself."""
    oauth2, oauth1, oauth2_port, oauth1_port = fakes
    providers = write_providers(tmp_path, oauth2_port, oauth1_port)
    authgate: Authgate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        gate = Gate(
            url=authgate.url,
            secret_key=authgate.secret_key,
            session=session,
            core=authgate.core,
            publisher=None,
            events=None,
            oauth2=oauth2,
            oauth1=oauth1,
        )
        await gate.settings(callback_url=str(authgate.url.with_path("/oauth/callback")))
        yield gate


async def proxied(gate: Gate, path: str, key: str, connection_id: str) -> tuple[int, Any]:
    headers = {
        "Authorization": f"Bearer {gate.secret_key}",
        "Provider-Config-Key": key,
        "Connection-Id": connection_id,
    }
    target = URL(str(gate.url).rstrip("/") + path, encoded=True)
    async with gate.session.get(target, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_oauth2_connection_works_through_the_proxy(served: Gate) -> None:
    await served.integration("crm", "fake-oauth2")
    token = await served.connect_session()

    page = await popup(served.session, served.connect_url("crm", connect_session_token=token))

    assert page.status == 200, page.text
    [listed] = await served.store.list_connections((await served.environment()).id)
    status, body = await proxied(served, "/proxy/api/me", "crm", listed.connection_id)
    assert (status, body) == (200, {"ok": True, "path": "me"})


async def test_oauth1_flow_signed_end_to_end(served: Gate) -> None:
    await served.integration("tweets", "fake-oauth1-flow", scopes="read")
    token = await served.connect_session()

    page = await popup(served.session, served.connect_url("tweets", connect_session_token=token))

    assert page.status == 200, page.text
    assert [endpoint for endpoint, verdict in served.oauth1.verdicts if verdict == "ok"] == [
        "request_token",
        "access_token",
    ]
    assert served.oauth1.request_params[0] == {"x_auth_access_type": "read"}
    consent = parse_qs(urlsplit(page.hops[0].location or "").query)
    assert consent["scope"] == ["read"]
    assert consent["oauth_token"][0].startswith("rqt-")
    [listed] = await served.store.list_connections((await served.environment()).id)
    connection = await served.connection("tweets", listed.connection_id)
    assert connection.credentials["type"] == "OAUTH1"
    assert connection.credentials["oauth_token"].startswith("act-")
    assert connection.credentials["raw"]["user_id"] == "42"
    status, body = await proxied(served, "/proxy/status?page=2", "tweets", listed.connection_id)
    assert (status, body) == (200, {"ok": True, "path": "status"})
    assert served.oauth1.verdicts[-1] == ("api", "ok")


async def test_basic_client_auth_json_body_and_no_pkce(gate: Gate) -> None:
    await gate.integration("basic", "fake-oauth2-basic", scopes="a,b")
    token = await gate.connect_session()

    page = await popup(gate.session, gate.connect_url("basic", connect_session_token=token))

    assert page.status == 200, page.text
    query = page.provider_query
    assert "code_challenge" not in query
    assert "code_challenge_method" not in query
    assert query["scope"] == ["a,b"]
    assert query["prompt"] == ["consent"]
    assert query["audience"] == ["default-audience"]
    [exchange] = gate.oauth2.exchanges
    assert exchange.verdict == "ok"
    assert (exchange.client_auth, exchange.content_type) == ("basic", "application/json")
    assert "code_verifier" not in exchange.params
    assert "client_secret" not in exchange.params
    assert gate.oauth2.pkce_verified == 0


async def test_a_state_is_redeemed_once(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()
    page = await popup(gate.session, gate.connect_url("crm", connect_session_token=token))
    assert page.status == 200, page.text
    callback = page.hops[-1].url

    replay = await popup(gate.session, callback)

    assert replay.status == 400
    assert error_of(replay)[0] == "state_err"
    assert len(gate.oauth2.exchanges) == 1


async def test_an_expired_connect_session_is_refused(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()
    await gate.store.db.execute("UPDATE connect_sessions SET expires_at = $1", 0)

    page = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token, ws_client_id="ws-1")
    )

    assert page.status == 401
    assert error_of(page)[0] == "unknown_connect_session_token"
    assert gate.publisher is not None
    assert [error[:2] for error in gate.publisher.errors] == [
        ("ws-1", "unknown_connect_session_token")
    ]
    assert gate.oauth2.authorize_queries == []


async def test_an_expired_oauth_session_is_refused(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()
    started = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token), stop_at=""
    )
    assert started.status == 302
    assert started.hops[0].location is not None
    await gate.store.db.execute("UPDATE oauth_sessions SET expires_at = $1", 1)

    page = await popup(gate.session, started.hops[0].location)

    assert page.status == 400
    assert error_of(page)[0] == "state_err"
    assert gate.oauth2.exchanges == []
    rows = await gate.store.db.fetchval("SELECT COUNT(*) FROM oauth_sessions")
    assert int(rows) == 0


# --- the legacy public key, with and without HMAC -------------------------------------------


def digest(message: str, key: str = HMAC_KEY) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"hmac": digest("crm")}, None),
        ({"connection_id": "acct-9", "hmac": digest("crm:acct-9")}, None),
        ({}, "missing_hmac"),
        ({"hmac": digest("crm:acct-9")}, "invalid_hmac"),
        ({"connection_id": "acct-9", "hmac": digest("crm")}, "invalid_hmac"),
        ({"hmac": digest("crm", key="another-key-0123456789")}, "invalid_hmac"),
        ({"hmac": "é" * 64}, "invalid_hmac"),
    ],
)
async def test_hmac_when_the_environment_enables_it(
    gate: Gate, query: dict[str, str], expected: str | None
) -> None:
    await gate.integration("crm", "fake-oauth2")
    await gate.settings(public_key=PUBLIC_KEY, hmac_enabled=True, hmac_key=HMAC_KEY)

    page = await popup(gate.session, gate.connect_url("crm", public_key=PUBLIC_KEY, **query))

    if expected is None:
        assert page.status == 200, page.text
        connection_id = query.get("connection_id")
        if connection_id is not None:
            await gate.connection("crm", connection_id)
    else:
        assert page.status == 400
        assert error_of(page)[0] == expected
        assert gate.oauth2.authorize_queries == []


async def test_a_public_key_alone_when_hmac_is_off(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    await gate.settings(public_key=PUBLIC_KEY, hmac_key=HMAC_KEY)

    page = await popup(
        gate.session,
        gate.connect_url(
            "crm",
            public_key=PUBLIC_KEY,
            connection_id="acct-1",
            **{"params[oauth_scopes_override]": "admin,audit"},
        ),
    )
    unknown = await popup(gate.session, gate.connect_url("crm", public_key="not-a-known-key"))
    missing = await popup(gate.session, gate.connect_url("crm"))

    assert page.status == 200, page.text
    assert page.provider_query["scope"] == ["admin audit"]
    connection = await gate.connection("crm", "acct-1")
    assert connection.end_user is None
    assert connection.tags == {}
    assert (unknown.status, error_of(unknown)[0]) == (401, "unknown_user_account")
    assert (missing.status, error_of(missing)[0]) == (401, "missing_public_key")


# --- what the frontend and the webhooks hear --------------------------------------------------


async def test_a_provider_refusal_is_surfaced(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session({"end_user": {"id": "user-3"}, "tags": {"team": "blue"}})
    gate.oauth2.refusal = ("access_denied", "The user said no </script><b>thanks</b>\u2028")

    page = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token, ws_client_id="ws-9")
    )

    assert page.status == 400
    error_type, message = error_of(page)
    assert error_type == "callback_err"
    assert "access_denied" in message
    assert "The user said no </script><b>thanks</b>" in message
    assert "<b>thanks" not in page.text.split("<script")[0]
    assert "The user said no &lt;/script&gt;&lt;b&gt;thanks&lt;/b&gt;" in page.text
    assert gate.publisher is not None
    assert gate.events is not None
    assert gate.publisher.errors == [("ws-9", "callback_err", message)]
    assert gate.publisher.successes == []
    [failure] = gate.events.failed
    assert failure["provider_config_key"] == "crm"
    assert failure["error_type"] == "callback_err"
    assert failure["auth_mode"] == "OAUTH2"
    assert failure["end_user"]["id"] == "user-3"
    assert failure["tags"]["team"] == "blue"
    assert gate.oauth2.exchanges == []


async def test_a_token_refusal_is_a_token_error(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2", client_secret="not-the-secret-0123")
    token = await gate.connect_session()

    page = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token, ws_client_id="ws-2")
    )

    assert page.status == 400
    error_type, message = error_of(page)
    assert error_type == "token_err"
    assert "invalid_client" in message
    assert "not-the-secret-0123" not in page.text
    assert gate.events is not None
    assert gate.events.failed[0]["error_type"] == "token_err"


async def test_success_is_published_and_reported(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()

    page = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token, ws_client_id="ws-5")
    )

    assert page.status == 200, page.text
    assert gate.publisher is not None
    assert gate.events is not None
    [(ws_client_id, key, connection_id, is_pending)] = gate.publisher.successes
    assert (ws_client_id, key, is_pending) == ("ws-5", "crm", False)
    assert gate.events.created == [("dev", "crm", connection_id, "OAUTH2", "creation")]
    assert gate.publisher.errors == []
    assert gate.events.failed == []


async def test_the_flow_needs_no_reporters(make_gate: GateFactory) -> None:
    gate = await make_gate(reporters=False)
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()

    page = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token, ws_client_id="ws-5")
    )

    assert page.status == 200, page.text


async def test_a_reconnect_session_reuses_the_connection(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    first = await gate.connect_session({"end_user": {"id": "user-1"}})
    assert (
        await popup(gate.session, gate.connect_url("crm", connect_session_token=first))
    ).status == 200
    [listed] = await gate.store.list_connections((await gate.environment()).id)
    environment = await gate.environment()
    await gate.store.write_metadata(
        environment.id, "crm", [listed.connection_id], {"k": "v"}, merge=False
    )
    before = await gate.connection("crm", listed.connection_id)
    body = {"connection_id": listed.connection_id, "integration_id": "crm"}
    again = await gate.connect_session(body, path="/reconnect")

    page = await popup(gate.session, gate.connect_url("crm", connect_session_token=again))

    assert page.status == 200, page.text
    after = await gate.connection("crm", listed.connection_id)
    assert after.version == before.version + 1
    assert after.credentials["access_token"] != before.credentials["access_token"]
    assert after.metadata == {"k": "v"}
    assert after.end_user is not None
    assert after.end_user["id"] == "user-1"
    assert len(await gate.store.list_connections(environment.id)) == 1
    assert gate.events is not None
    assert [event[4] for event in gate.events.created] == ["creation", "override"]


async def test_connect_session_defaults_win(gate: Gate) -> None:
    await gate.integration("basic", "fake-oauth2-basic", scopes="a,b")
    defaults = {
        "basic": {
            "user_scopes": "ignored-here",
            "authorization_params": {"prompt": "login"},
            "connection_config": {"oauth_scopes_override": "x,y", "audience": "api-7"},
        }
    }
    token = await gate.connect_session(
        {"end_user": {"id": "u"}, "integrations_config_defaults": defaults}
    )
    url = gate.connect_url(
        "basic",
        connect_session_token=token,
        **{
            "authorization_params[prompt]": "none",
            "authorization_params[display]": "popup",
            "params[audience]": "browser-choice",
            "params[oauth_scopes_override]": "admin",
            "params[webhook_url]": "https://attacker.example.com/hook",
            "params[region]": "eu",
        },
    )

    page = await popup(gate.session, url)

    assert page.status == 200, page.text
    query = page.provider_query
    assert query["scope"] == ["x,y"]
    assert query["prompt"] == ["login"]
    assert query["display"] == ["popup"]
    assert query["audience"] == ["api-7"]
    [listed] = await gate.store.list_connections((await gate.environment()).id)
    connection = await gate.connection("basic", listed.connection_id)
    assert connection.connection_config == {
        "audience": "api-7",
        "oauth_scopes_override": "x,y",
        "region": "eu",
    }


async def test_a_webhook_override_from_the_session_reaches_the_connection(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session(
        {"end_user": {"id": "u"}, "webhook_url_override": "https://hooks.example.com/in"}
    )

    page = await popup(gate.session, gate.connect_url("crm", connect_session_token=token))

    assert page.status == 200, page.text
    [listed] = await gate.store.list_connections((await gate.environment()).id)
    assert listed.webhook_url_override == "https://hooks.example.com/in"


async def test_params_complete_the_provider_urls(gate: Gate) -> None:
    await gate.integration("desk", "fake-oauth2-tenant")
    token = await gate.connect_session()

    page = await popup(
        gate.session,
        gate.connect_url("desk", connect_session_token=token, **{"params[tenant]": "acme"}),
    )
    missing = await popup(gate.session, gate.connect_url("desk", connect_session_token=token))

    assert page.status == 200, page.text
    assert urlsplit(page.hops[0].location or "").path == "/t/acme/oauth/authorize"
    assert [exchange.verdict for exchange in gate.oauth2.exchanges] == ["ok"]
    [listed] = await gate.store.list_connections((await gate.environment()).id)
    assert listed.connection_config == {"tenant": "acme"}
    assert missing.status == 400
    error_type, message = error_of(missing)
    assert error_type == "url_param_err"
    assert "connectionConfig.tenant" in message


async def test_browser_client_overrides(gate: Gate) -> None:
    await gate.integration(
        "crm", "fake-oauth2", client_id="wrong-client", client_secret="wrong-secret-0123"
    )
    token = await gate.connect_session()
    url = gate.connect_url(
        "crm",
        connect_session_token=token,
        **{
            "credentials[oauth_client_id_override]": CLIENT_ID,
            "credentials[oauth_client_secret_override]": CLIENT_SECRET,
            "credentials[oauth_refresh_token_override]": "rt-from-the-backend-0123",
        },
    )

    page = await popup(gate.session, url)

    assert page.status == 200, page.text
    assert page.provider_query["client_id"] == [CLIENT_ID]
    [listed] = await gate.store.list_connections((await gate.environment()).id)
    connection = await gate.connection("crm", listed.connection_id)
    assert connection.credentials["config_override"] == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert connection.credentials["refresh_token"] == "rt-from-the-backend-0123"
    assert connection.connection_config["overrideTokenRefresh"] is True
    row = await gate.store.db.fetchval("SELECT COUNT(*) FROM oauth_sessions")
    assert int(row) == 0


async def test_the_environment_callback_url_is_used(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    await gate.settings(callback_url="https://app.example.com/oauth-return")
    token = await gate.connect_session()

    started = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token), stop_at=""
    )

    location = started.hops[0].location or ""
    assert parse_qs(urlsplit(location).query)["redirect_uri"] == [
        "https://app.example.com/oauth-return"
    ]


# --- refusals before the redirect ---------------------------------------------------------


async def test_refusals_before_the_redirect(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    await gate.integration("other", "fake-oauth2")
    # The API refuses an OAuth integration without a client; the store does not.
    environment = await gate.environment()
    await gate.store.create_integration(environment.id, unique_key="bare", provider="fake-oauth2")
    await gate.store.create_integration(
        environment.id, unique_key="half", provider="fake-oauth2", credentials={"client_id": "c"}
    )
    body = {"unique_key": "keys", "provider": "fake-api-key"}
    status, answer = await gate.api("POST", "/integrations", body)
    assert status == 200, answer
    allowed = await gate.connect_session(
        {"end_user": {"id": "u"}, "allowed_integrations": ["crm", "bare", "half", "keys"]}
    )
    everything = await gate.connect_session()

    cases = {
        "integration_not_allowed": gate.connect_url("other", connect_session_token=allowed),
        "unknown_config_key": gate.connect_url("nope", connect_session_token=everything),
        "provider_config_err": gate.connect_url("bare", connect_session_token=allowed),
        "auth_mode_err": gate.connect_url("keys", connect_session_token=allowed),
        "invalid_query_params": gate.connect_url(
            "crm", connect_session_token=allowed, connection_id="mine"
        ),
        "invalid_connect_session_token_format": gate.connect_url(
            "crm", connect_session_token="nango_connect_session_short"
        ),
    }
    half = await popup(gate.session, gate.connect_url("half", connect_session_token=allowed))
    assert error_of(half)[0] == "provider_config_err"
    for expected, url in cases.items():
        page = await popup(gate.session, url)
        assert page.status in (400, 401), (expected, page.status)
        assert error_of(page)[0] == expected
    assert gate.oauth2.authorize_queries == []
    rows = await gate.store.db.fetchval("SELECT COUNT(*) FROM oauth_sessions")
    assert int(rows) == 0


# --- the outbound (SSRF) policy ---------------------------------------------------------


async def test_private_provider_urls_are_refused(make_gate: GateFactory) -> None:
    gate = await make_gate(AUTHGATE_ALLOW_PRIVATE_UPSTREAMS="false")
    await gate.integration("crm", "fake-oauth2")
    await gate.integration("remote", "fake-oauth2-remote-token")
    await gate.integration("consent", "fake-oauth2-private-consent")
    token = await gate.connect_session()

    private = await popup(gate.session, gate.connect_url("crm", connect_session_token=token))
    consent = await popup(gate.session, gate.connect_url("consent", connect_session_token=token))
    started = await popup(
        gate.session, gate.connect_url("remote", connect_session_token=token), stop_at=""
    )
    location = started.hops[0].location or ""
    assert location.startswith("https://auth.example.com/authorize?")
    callback = gate.url.with_path("/oauth/callback").with_query(
        code="any-code-0123456789", state=state_of(location)
    )
    refused = await popup(gate.session, callback)

    assert private.status == 400
    error_type, message = error_of(private)
    assert error_type == "url_param_err"
    assert "token URL is refused" in message
    assert consent.status == 400
    error_type, message = error_of(consent)
    assert error_type == "url_param_err"
    assert "authorization URL is refused by the outbound policy (loopback)" in message
    assert refused.status == 400
    error_type, message = error_of(refused)
    assert error_type == "token_err"
    assert "outbound policy" in message
    assert gate.oauth2.authorize_queries == []
    assert gate.oauth2.exchanges == []


# --- the popup's last page, and the state cookie -----------------------------------------


async def test_the_callback_page_is_locked_down(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()

    page = await popup(gate.session, gate.connect_url("crm", connect_session_token=token))
    failed = await popup(gate.session, page.hops[-1].url)

    for answer in (page, failed):
        headers = answer.headers
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "no-referrer"
        scripts = re.findall(r"<script>(.*?)</script>", answer.text, re.S)
        assert scripts == [SCRIPT]
    policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{script_hash}'"
    assert "nango_oauth_callback_success" in SCRIPT
    assert "nango-oauth-callback" in SCRIPT


async def test_the_state_cookie_is_set_and_only_measured(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()

    started = await popup(
        gate.session, gate.connect_url("crm", connect_session_token=token), stop_at=""
    )
    location = started.hops[0].location or ""
    [cookie] = started.hops[0].set_cookie
    name = f"oauth2-{state_of(location)}"
    assert cookie.startswith(f"{name}=1;")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "max-age", "path", "samesite"} <= attributes
    assert "Max-Age=3600" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    gate.session.cookie_jar.clear()

    page = await popup(gate.session, location)

    assert page.status == 200, page.text


# --- secrets stay out of the logs ---------------------------------------------------------


async def test_no_secret_reaches_a_log_line(gate: Gate, caplog: pytest.LogCaptureFixture) -> None:
    await gate.integration("crm", "fake-oauth2")
    await gate.integration("tweets", "fake-oauth1-flow")
    token = await gate.connect_session()
    caplog.set_level(logging.DEBUG)

    for key in ("crm", "tweets"):
        page = await popup(gate.session, gate.connect_url(key, connect_session_token=token))
        assert page.status == 200, page.text
    replay = await popup(gate.session, page.hops[-1].url)
    assert replay.status == 400

    environment = await gate.environment()
    stored = await gate.store.list_connections(environment.id)
    secrets = [CLIENT_SECRET, CONSUMER_SECRET, token, *gate.oauth2.issued_secrets()]
    secrets += gate.oauth1.issued_secrets()
    for connection in stored:
        for field_name in ("access_token", "refresh_token", "oauth_token", "oauth_token_secret"):
            value = connection.credentials.get(field_name)
            if value:
                secrets.append(value)
    verifiers = [exchange.params.get("code_verifier", "") for exchange in gate.oauth2.exchanges]
    secrets += [verifier for verifier in verifiers if verifier]
    assert len(secrets) >= 12
    formatter = JsonFormatter()
    rendered = "\n".join(formatter.format(record) for record in caplog.records)
    assert caplog.records, "the flows logged nothing at all"
    leaked = [secret[:6] for secret in secrets if secret in rendered]
    assert leaked == []


async def test_what_the_provider_says_wins_over_browser_params(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2", scopes="read")
    token = await gate.connect_session()
    url = gate.connect_url(
        "crm",
        connect_session_token=token,
        **{
            "params[team.id]": "T-evil",
            "params[is_admin]": "no",
            "params[own]": "kept",
            "params[oauth_scopes_override]": "admin",
        },
    )

    page = await popup(gate.session, url)

    assert page.status == 200, page.text
    assert page.provider_query["scope"] == ["read"]
    [listed] = await gate.store.list_connections((await gate.environment()).id)
    assert listed.connection_config == {"team.id": "T-42", "is_admin": True, "own": "kept"}


async def test_a_head_request_neither_starts_nor_redeems(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    token = await gate.connect_session()
    connect = gate.connect_url("crm", connect_session_token=token)
    # Not routed: the middleware's answer to an unknown method of a route (401 or 405).
    async with gate.session.head(connect, allow_redirects=False) as response:
        assert response.status in (401, 405)
    assert int(await gate.store.db.fetchval("SELECT COUNT(*) FROM oauth_sessions")) == 0
    started = await popup(gate.session, connect, stop_at="")
    consent = started.hops[0].location or ""
    async with gate.session.get(URL(consent, encoded=True), allow_redirects=False) as response:
        callback = response.headers["Location"]
    async with gate.session.head(URL(callback, encoded=True), allow_redirects=False) as response:
        assert response.status in (401, 405)

    page = await popup(gate.session, callback)

    assert page.status == 200, page.text


async def test_an_oauth1_callback_must_return_its_request_token(gate: Gate) -> None:
    await gate.integration("tweets", "fake-oauth1-flow")
    token = await gate.connect_session()
    started = await popup(
        gate.session, gate.connect_url("tweets", connect_session_token=token), stop_at=""
    )
    consent = parse_qs(urlsplit(started.hops[0].location or "").query)
    callback = URL(consent["oauth_callback"][0])
    swapped = callback.update_query(oauth_token="rqt-someone-else", oauth_verifier="ver-x")

    page = await popup(gate.session, swapped)

    assert page.status == 400
    assert error_of(page)[0] == "callback_err"
    assert [endpoint for endpoint, _ in gate.oauth1.verdicts] == ["request_token"]


async def test_authorising_again_repairs_unreadable_credentials(gate: Gate) -> None:
    await gate.integration("crm", "fake-oauth2")
    await gate.settings(public_key=PUBLIC_KEY)
    url = gate.connect_url("crm", public_key=PUBLIC_KEY, connection_id="acct-5")
    assert (await popup(gate.session, url)).status == 200
    # As if sealed under a key that has since been retired.
    await gate.store.db.execute("UPDATE connections SET credentials_enc = $1", "v1.gone.garbage")

    page = await popup(gate.session, url)

    assert page.status == 200, page.text
    repaired = await gate.connection("crm", "acct-5")
    assert repaired.credentials["access_token"].startswith("at-")
    assert gate.events is not None
    assert [event[4] for event in gate.events.created] == ["creation", "override"]
