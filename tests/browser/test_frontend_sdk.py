"""The real `@nangohq/frontend` 0.71.10, from npm, in headless Chromium, against a real
`authgate serve`.

An application on its own origin (tests/browser/sdk_app.py) uses the SDK the way its
documentation says: `nango.auth` with a connect session token (a popup and the
WebSocket for OAuth, a cross-origin `fetch` for API keys and passwords) and
`openConnectUI` (authgate's Connect page in a frame). Each test then checks what the
application's backend would rely on: the connection exists with what was given, and an
OAuth connection works through the proxy.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import FrameLocator, Page, Request, expect

from tests.browser.conftest import (
    INTEGRATION_NAMES,
    BrowserLog,
    Gate,
    Screenshots,
    assert_page_behaved,
    register_provider_secrets,
)
from tests.log_scan import SecretRegistry

if TYPE_CHECKING:
    from tests.browser.sdk_app import SdkApplication

# The fixtures `sdk_installed` and `sdk_application`; a plugin, so that pytest imports
# (and rewrites the asserts of) the module itself.
pytest_plugins = ["tests.browser.sdk_app"]

API_KEY_VALUE = "ak_sdk-browser-test-key"
BASIC_PASSWORD = "sdk-browser-test-password"
CALLBACK_SUCCESS = {"type": "nango_oauth_callback_success"}
# The fake provider's API echoes the path it was asked for (tests/e2e/oauth_fakes.py).
PROXIED_PATH = "whoami"
# A bound, not a delay: the popup closes half a second after the flow ends.
CLOSE_TIMEOUT = 20.0


async def proxied(gate: Gate, key: str, connection_id: str) -> tuple[int, Any]:
    """What the application's backend gets asking the provider's API through the proxy."""
    headers = {
        "Authorization": f"Bearer {gate.secret_key}",
        "Connection-Id": connection_id,
        "Provider-Config-Key": key,
    }
    target = gate.url.with_path(f"/proxy/{PROXIED_PATH}")
    async with gate.http.get(target, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def assert_works_through_the_proxy(gate: Gate, key: str, connection_id: str) -> None:
    """The fake API answers 200 only for an access token its token endpoint issued; the
    stored one is such a token."""
    assert await proxied(gate, key, connection_id) == (200, {"ok": True, "path": PROXIED_PATH})
    stored = await gate.connection(key, connection_id)
    assert stored["credentials"]["access_token"] in gate.oauth.issued_secrets()


async def wait_for_message(page: Page, origin: str, kind: str) -> dict[str, Any]:
    """The first message of type `kind` the application received from `origin`."""
    await page.wait_for_function(
        "([origin, kind]) => window.received.some("
        "  (m) => m.origin === origin && m.data && m.data.type === kind)",
        arg=[origin, kind],
    )
    received = await page.evaluate("window.received")
    found: dict[str, Any] = next(
        m["data"] for m in received if m["origin"] == origin and m["data"].get("type") == kind
    )
    return found


def closing(popup: Page) -> asyncio.Event:
    """Set once the popup has closed. Made as soon as the popup exists: it closes itself,
    on its own schedule, so a later wait could miss the event."""
    closed = asyncio.Event()
    popup.once("close", lambda _: closed.set())
    if popup.is_closed():
        closed.set()
    return closed


async def until_closed(closed: asyncio.Event) -> None:
    async with asyncio.timeout(CLOSE_TIMEOUT):
        await closed.wait()


def assert_is_server_id(connection_id: Any) -> None:
    """A connect session's connection gets a UUID v4 from the server."""
    assert isinstance(connection_id, str)
    assert uuid.UUID(connection_id).version == 4


# --- nango.auth: OAuth in a popup --------------------------------------------------------


async def test_auth_popup_resolves_and_the_connection_works_through_the_proxy(
    gate_with_integrations: Gate,
    sdk_application: SdkApplication,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate, app = gate_with_integrations, sdk_application
    session = await gate.connect_session()
    await app.open(page)
    async with page.expect_popup() as popup_info, page.expect_websocket() as socket_info:
        await app.start_auth(page, gate.origin, session.token, "acme-cloud")
    popup_closed = closing(await popup_info.value)
    socket = await socket_info.value
    assert socket.url == f"ws://{urlsplit(gate.origin).netloc}/"

    outcome = await app.auth_outcome(page)
    assert outcome.ok, outcome
    assert outcome.result["providerConfigKey"] == "acme-cloud"
    assert outcome.result["isPending"] is False
    connection_id = outcome.result["connectionId"]
    assert_is_server_id(connection_id)
    await screenshots.take(page, "auth-resolved")

    # The popup ran the flow: through the consent page to the provider, which saw our
    # client, and back to authgate's callback page, which told the application too.
    (authorize,) = gate.oauth.authorize_queries
    assert authorize["client_id"] == "acme-client"
    assert await wait_for_message(page, gate.origin, "nango_oauth_callback_success") == (
        CALLBACK_SUCCESS
    )
    await until_closed(popup_closed)
    assert [c["connection_id"] for c in await gate.connections()] == [connection_id]
    await assert_works_through_the_proxy(gate, "acme-cloud", connection_id)
    register_provider_secrets(gate, secret_registry)
    assert_page_behaved(log, secret_registry, session.token)


async def test_auth_popup_rejects_with_the_error_type_the_server_reports(
    gate_with_integrations: Gate,
    sdk_application: SdkApplication,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate, app = gate_with_integrations, sdk_application
    gate.oauth.refusal = ("access_denied", "The user said no")
    session = await gate.connect_session()
    await app.open(page)
    async with page.expect_popup():
        await app.start_auth(page, gate.origin, session.token, "acme-cloud")

    outcome = await app.auth_outcome(page)
    assert not outcome.ok
    assert outcome.auth_error, outcome
    # What the callback page reports is what the SDK's AuthError carries.
    reported = await wait_for_message(page, gate.origin, "nango_oauth_callback_error")
    assert reported["payload"]["errorType"] == "callback_err"
    assert outcome.type == reported["payload"]["errorType"]
    assert outcome.message == reported["payload"]["message"]
    assert outcome.message is not None
    assert "access_denied" in outcome.message
    assert "The user said no" in outcome.message
    await screenshots.take(page, "auth-refused")
    assert await gate.connections() == []
    assert_page_behaved(log, secret_registry, session.token)


# --- nango.auth: credentials sent with fetch ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "options", "stored_credentials", "stored_config"),
    [
        pytest.param(
            "acme-keys",
            {"credentials": {"apiKey": API_KEY_VALUE}, "params": {"subdomain": "my-team"}},
            {"type": "API_KEY", "apiKey": API_KEY_VALUE},
            {"subdomain": "my-team"},
            id="api-key",
        ),
        pytest.param(
            "acme-basic",
            {"credentials": {"username": "ann", "password": BASIC_PASSWORD}},
            {"type": "BASIC", "username": "ann", "password": BASIC_PASSWORD},
            {},
            id="basic",
        ),
    ],
)
async def test_auth_with_credentials_resolves_and_stores_them(
    gate_with_integrations: Gate,
    sdk_application: SdkApplication,
    page: Page,
    log: BrowserLog,
    secret_registry: SecretRegistry,
    key: str,
    options: dict[str, Any],
    stored_credentials: dict[str, str],
    stored_config: dict[str, str],
) -> None:
    gate, app = gate_with_integrations, sdk_application
    session = await gate.connect_session()
    await app.open(page)
    async with page.expect_request(lambda r: "/api-auth/" in r.url) as captured:
        outcome = await app.auth(page, gate.origin, session.token, key, options)
    request: Request = await captured.value
    # Sent from the application's origin: only CORS lets the SDK read the answer.
    assert (await request.all_headers())["origin"] == app.origin
    assert request.method == "POST"

    assert outcome.ok, outcome
    assert outcome.result["providerConfigKey"] == key
    connection_id = outcome.result["connectionId"]
    assert_is_server_id(connection_id)
    connection = await gate.connection(key, connection_id)
    assert {name: connection["credentials"].get(name) for name in stored_credentials} == (
        stored_credentials
    )
    for name, value in stored_config.items():
        assert connection["connection_config"][name] == value
    assert [c["connection_id"] for c in await gate.connections()] == [connection_id]
    assert_page_behaved(log, secret_registry, session.token)


async def test_auth_with_credentials_rejects_with_the_servers_error_code(
    gate_with_integrations: Gate,
    sdk_application: SdkApplication,
    page: Page,
    log: BrowserLog,
    secret_registry: SecretRegistry,
) -> None:
    """The error answer must be readable cross-origin too, or the SDK sees only a
    network failure."""
    gate, app = gate_with_integrations, sdk_application
    session = await gate.connect_session(allowed=["acme-keys"])
    await app.open(page)
    credentials = {"username": "ann", "password": BASIC_PASSWORD}
    outcome = await app.auth(
        page, gate.origin, session.token, "acme-basic", {"credentials": credentials}
    )
    assert not outcome.ok
    assert outcome.auth_error, outcome
    assert outcome.type == "integration_not_allowed"
    assert outcome.message == "This integration is not allowed by the connect session"
    assert await gate.connections() == []
    assert_page_behaved(log, secret_registry, session.token)


async def test_create_connects_a_provider_that_needs_no_sign_in(
    gate_with_integrations: Gate,
    sdk_application: SdkApplication,
    page: Page,
    log: BrowserLog,
    secret_registry: SecretRegistry,
) -> None:
    gate, app = gate_with_integrations, sdk_application
    await gate.call("POST", "/integrations", {"unique_key": "acme-open", "provider": "acme-open"})
    session = await gate.connect_session()
    await app.open(page)
    outcome = await app.auth(
        page, gate.origin, session.token, "acme-open", {"params": {"region": "eu"}}, method="create"
    )
    assert outcome.ok, outcome
    assert outcome.result["providerConfigKey"] == "acme-open"
    stored = await gate.connection("acme-open", outcome.result["connectionId"])
    assert stored["credentials"] == {}
    assert stored["connection_config"] == {"region": "eu"}
    assert_page_behaved(log, secret_registry, session.token)


# --- openConnectUI -----------------------------------------------------------------------


async def expect_heading(frame: FrameLocator, name: str) -> None:
    await expect(frame.get_by_role("heading", level=1)).to_have_accessible_name(name)


@pytest.mark.parametrize("token_given", ["before ready", "after ready"])
async def test_connect_ui_signs_in_and_tells_on_event(
    gate_with_integrations: Gate,
    sdk_application: SdkApplication,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
    token_given: str,
) -> None:
    """`setSessionToken` before the frame is ready (the SDK keeps it for `ready`) or
    after (the SDK sends it at once); either way the Connect page gets it."""
    gate, app = gate_with_integrations, sdk_application
    session = await gate.connect_session()
    await app.open(page)
    if token_given == "before ready":
        await app.open_connect_ui(page, f"{gate.origin}/connect", gate.origin, session.token)
    else:
        await app.open_connect_ui(page, f"{gate.origin}/connect", gate.origin)
        await page.wait_for_function("window.events.some((e) => e.type === 'ready')")
        await app.set_session_token(page, session.token)

    iframe = page.locator("iframe#connect-ui")
    source = urlsplit(await iframe.get_attribute("src") or "")
    assert (f"{source.scheme}://{source.netloc}", source.path) == (gate.origin, "/connect/")
    frame = page.frame_locator("iframe#connect-ui")
    await expect(frame.locator(".choice")).to_have_count(len(INTEGRATION_NAMES))
    await screenshots.take(page, "connect-ui-list")

    async with page.expect_popup() as popup_info:
        await frame.get_by_role("button", name="Acme Cloud").click()
    popup_closed = closing(await popup_info.value)
    await expect_heading(frame, "Connected")
    await screenshots.take(page, "connect-ui-connected")
    await until_closed(popup_closed)

    events = await app.events(page)
    assert [event["type"] for event in events] == ["ready", "connect"]
    payload = events[1]["payload"]
    assert payload["providerConfigKey"] == "acme-cloud"
    assert set(payload) <= {"providerConfigKey", "connectionId", "isPending"}
    assert_is_server_id(payload["connectionId"])
    await assert_works_through_the_proxy(gate, "acme-cloud", payload["connectionId"])

    # Done closes the Connect page; the SDK removes its frame on `close`.
    await frame.get_by_role("button", name="Done").click()
    await expect(iframe).to_have_count(0)
    assert [event["type"] for event in await app.events(page)] == ["ready", "connect", "close"]
    register_provider_secrets(gate, secret_registry)
    assert_page_behaved(log, secret_registry, session.token)
