"""Browser tests: headless Chromium (Debian's build) driven by Playwright for Python,
against a real `authgate serve` on a real socket.

Playwright is only the driver: no browser is downloaded, `executable_path` points at the
system Chromium (`/usr/bin/chromium`, or `AUTHGATE_CHROMIUM`). Without it the tests skip
and say why. Screenshots are kept under `tests/.artifacts/connect/`; each test prints
where it wrote them.

The store is SQLite only: what these tests exercise is the page in a browser, which reads
the same API on either backend (the API itself is proven on both in tests/e2e).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)
from yarl import URL

from authgate.serving import Running, start_serve
from management.settings import ManagementSettings
from proxy.settings import ProxySettings
from tests.e2e.oauth_fakes import OAuth2Provider
from tests.e2e.processes import free_port
from tests.log_scan import SecretRegistry

CHROMIUM = Path(os.environ.get("AUTHGATE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts" / "connect"
VIEWPORT: ViewportSize = {"width": 1024, "height": 768}
# How long an expectation may wait for the page (a bound, not a delay: each returns as
# soon as it holds). An OAuth flow crosses four servers; CI shares two cores.
expect.set_options(timeout=20_000)

# Providers the page is shown: an API-key provider whose form has a connection-config
# field (with a pattern, prefix and suffix) and an automated one it must not show, a
# Basic provider, an OAuth provider whose sign-in needs nothing typed, and one that needs
# a tenant (a connection-config field put into its URLs). Both OAuth providers are the
# fake authorization server of tests/e2e/oauth_fakes.py, at OAUTH_ORIGIN; Acme Cloud's
# users pass through a consent page first (CONSENT_ORIGIN, see ConsentPage). Two more are
# in the catalogue but not among the integrations every test creates: Acme Checked tests
# a key against the fake's API, which accepts only the access tokens it issued; Acme Open
# needs no sign-in.
PROVIDERS = """
acme-keys:
    display_name: Acme Keys
    docs: https://docs.example.com/acme
    docs_connect: https://docs.example.com/acme/connect
    auth_mode: API_KEY
    proxy:
        base_url: https://${connectionConfig.subdomain}.acme.example
        headers:
            x-api-key: ${apiKey}
    connection_config:
        subdomain:
            type: string
            title: Acme subdomain
            description: The first part of your Acme address.
            example: my-team
            pattern: ^[a-z0-9-]+$
            prefix: https://
            suffix: .acme.example
            doc_section: '#subdomain'
        region:
            type: string
            title: Region
            automated: true
    credentials:
        apiKey:
            type: string
            title: Acme API key
            example: ak_0123456789
            pattern: ^ak_
            secret: true
acme-basic:
    display_name: Acme Legacy
    auth_mode: BASIC
    proxy:
        base_url: https://legacy.acme.example
acme-checked:
    display_name: Acme Checked
    auth_mode: API_KEY
    proxy:
        base_url: OAUTH_ORIGIN/api
        headers:
            authorization: Bearer ${apiKey}
        verification:
            method: GET
            endpoints: [/me]
acme-open:
    display_name: Acme Open
    auth_mode: NONE
    proxy:
        base_url: OAUTH_ORIGIN/open
    connection_config:
        region:
            type: string
            title: Region
acme-cloud:
    display_name: Acme Cloud
    auth_mode: OAUTH2
    authorization_url: CONSENT_ORIGIN/authorize
    token_url: OAUTH_ORIGIN/oauth/token
    proxy:
        base_url: OAUTH_ORIGIN/api
acme-tenant:
    display_name: Acme Tenant
    auth_mode: OAUTH2
    authorization_url: OAUTH_ORIGIN/t/${connectionConfig.tenant}/oauth/authorize
    token_url: OAUTH_ORIGIN/t/${connectionConfig.tenant}/oauth/token
    proxy:
        base_url: OAUTH_ORIGIN/api
    connection_config:
        tenant:
            type: string
            title: Tenant
            pattern: ^[a-z]+$
"""
OAUTH_CLIENT_ID = "acme-client"
OAUTH_CLIENT_SECRET = "acme-client-secret-for-tests"
OAUTH_CLIENT = {
    "type": "OAUTH2",
    "client_id": OAUTH_CLIENT_ID,
    "client_secret": OAUTH_CLIENT_SECRET,
}
INTEGRATIONS = (
    {"unique_key": "acme-keys", "provider": "acme-keys"},
    {"unique_key": "acme-basic", "provider": "acme-basic"},
    {"unique_key": "acme-cloud", "provider": "acme-cloud", "credentials": OAUTH_CLIENT},
    {"unique_key": "acme-tenant", "provider": "acme-tenant", "credentials": OAUTH_CLIENT},
)
INTEGRATION_NAMES = ["Acme Cloud", "Acme Keys", "Acme Legacy", "Acme Tenant"]


class ConsentPage:
    """The provider's consent screen, on an origin of its own: it sends the browser on to
    the authorization server with the same query. A test may have it first post a
    message to the window that opened it (`forge`), as a hostile page could."""

    def __init__(self, authorize_url: str) -> None:
        self.authorize_url = authorize_url
        self.forge: dict[str, Any] | None = None
        self.app = web.Application()
        self.app.router.add_get("/authorize", self._authorize)

    async def _authorize(self, request: web.Request) -> web.Response:
        onward = f"{self.authorize_url}?{request.query_string}"
        if self.forge is None:
            return web.Response(status=302, headers={"Location": onward})
        script = (
            f"window.opener.postMessage({json.dumps(self.forge)}, '*');"
            f"location.replace({json.dumps(onward)});"
        )
        return web.Response(text=f"<script>{script}</script>", content_type="text/html")


@dataclass(frozen=True, slots=True)
class ConnectSession:
    token: str
    connect_link: str


@dataclass
class Gate:
    """A running `authgate serve` and an HTTP client for its API."""

    url: URL
    secret_key: str
    environ: dict[str, str]
    http: aiohttp.ClientSession
    running: Running
    oauth: OAuth2Provider
    consent: ConsentPage
    consent_origin: str

    @property
    def origin(self) -> str:
        return str(self.url).rstrip("/")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.secret_key}"}
        async with self.http.request(
            method, self.url.with_path(path), json=body, headers=headers
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def create_integrations(self) -> None:
        for integration in INTEGRATIONS:
            await self.call("POST", "/integrations", integration)

    async def connect_session(self, allowed: list[str] | None = None) -> ConnectSession:
        body: dict[str, Any] = {"end_user": {"id": "user-1", "email": "ann@example.com"}}
        if allowed is not None:
            body["allowed_integrations"] = allowed
        data = (await self.call("POST", "/connect/sessions", body))["data"]
        return ConnectSession(token=data["token"], connect_link=data["connect_link"])

    async def connections(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = (await self.call("GET", "/connections"))["connections"]
        return listed

    async def connection(self, key: str, connection_id: str) -> dict[str, Any]:
        path = f"/connections/{connection_id}?provider_config_key={key}"
        async with self.http.get(
            self.url.join(URL(path, encoded=False)),
            headers={"Authorization": f"Bearer {self.secret_key}"},
        ) as response:
            assert response.status == 200, await response.text()
            found: dict[str, Any] = await response.json()
            return found


@dataclass
class BrowserLog:
    """What the page said on its console and which errors it threw."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def record_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def record_error(self, error: Exception) -> None:
        self.errors.append(str(error))


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[Gate]:
    """authgate on a port chosen up front, so that its public URL (and with it every
    connect link and OAuth callback URL) names the port the browser really reaches."""
    oauth = OAuth2Provider(client_id=OAUTH_CLIENT_ID, client_secret=OAUTH_CLIENT_SECRET)
    oauth_server = TestServer(oauth.app, host="127.0.0.1")
    await oauth_server.start_server()
    oauth_origin = f"http://127.0.0.1:{oauth_server.port}"
    consent = ConsentPage(f"{oauth_origin}/oauth/authorize")
    consent_server = TestServer(consent.app, host="127.0.0.1")
    await consent_server.start_server()
    consent_origin = f"http://127.0.0.1:{consent_server.port}"
    port = free_port()
    providers = tmp_path / "browser-providers.yaml"
    providers.write_text(
        PROVIDERS.replace("OAUTH_ORIGIN", oauth_origin).replace("CONSENT_ORIGIN", consent_origin)
    )
    environ = {
        "AUTHGATE_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'authgate.db'}",
        "AUTHGATE_SECRET_KEY": str(uuid.uuid4()),
        "AUTHGATE_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "AUTHGATE_PROVIDERS_FILE": str(providers),
        "AUTHGATE_PORT": str(port),
        "AUTHGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        # The fake authorization server listens on 127.0.0.1.
        "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
    }
    running = await start_serve(
        ProxySettings.from_env(environ), ManagementSettings.from_env(environ), port=port
    )
    http = aiohttp.ClientSession()
    try:
        yield Gate(
            url=URL(f"http://127.0.0.1:{port}/"),
            secret_key=environ["AUTHGATE_SECRET_KEY"],
            environ=environ,
            http=http,
            running=running,
            oauth=oauth,
            consent=consent,
            consent_origin=consent_origin,
        )
    finally:
        await http.close()
        await running.close()
        await consent_server.close()
        await oauth_server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AUTHGATE_CHROMIUM)"
        )
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page_and_log(browser: Browser) -> AsyncIterator[tuple[Page, BrowserLog]]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    log = BrowserLog()
    context.on("console", log.record_console)
    page.on("pageerror", log.record_error)
    try:
        yield page, log
    finally:
        await context.close()


@pytest.fixture
def page(page_and_log: tuple[Page, BrowserLog]) -> Page:
    return page_and_log[0]


@pytest.fixture
def log(page_and_log: tuple[Page, BrowserLog]) -> BrowserLog:
    return page_and_log[1]


@pytest.fixture
async def gate_with_integrations(gate: Gate) -> Gate:
    await gate.create_integrations()
    return gate


@dataclass(frozen=True, slots=True)
class Screenshots:
    directory: Path
    prefix: str

    async def take(self, page: Page, name: str) -> Path:
        path = self.directory / f"{self.prefix}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)
    print(f"screenshots of {request.node.nodeid}: {ARTIFACTS}/{prefix}-*.png")
    return Screenshots(ARTIFACTS, prefix)


def register_provider_secrets(gate: Gate, registry: SecretRegistry) -> None:
    """The codes and tokens the fake provider issued join the suite's log scan."""
    for value in gate.oauth.issued_secrets():
        registry.add(value, "fake provider code or token")


def assert_page_behaved(log: BrowserLog, registry: SecretRegistry, *tokens: str) -> None:
    """No uncaught script error, nothing the page's own CSP refused, and no session token
    on the console. The tokens also join the suite's log scan."""
    for token in tokens:
        registry.add(token, "connect session token")
    assert log.errors == []
    assert [line for line in log.console if "Content Security Policy" in line] == []
    assert [line for line in log.console if any(token in line for token in tokens)] == []
