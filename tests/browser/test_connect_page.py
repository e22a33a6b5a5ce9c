"""The Connect page in headless Chromium, against a real `authgate serve`.

A backend creates a connect session through the API; the browser opens its connect_link
(or a test application frames the page and hands it the token, as openConnectUI does).
What is checked is what a user and an embedding application see: the list, the forms
built from the provider definitions, announced validation errors, keyboard-only use,
narrow screens and the dark theme, the requests the page sends to connect, and the
postMessage protocol with the embedding page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Frame, Page, Request, ViewportSize, expect

from tests.browser.conftest import (
    INTEGRATION_NAMES,
    BrowserLog,
    Gate,
    Screenshots,
    assert_page_behaved,
    register_provider_secrets,
)
from tests.log_scan import SecretRegistry

API_KEY_VALUE = "ak_browser-test-value"
BASIC_PASSWORD = "browser-basic-password"
REFUSED_KEY = "refused-browser-key"
NARROW: ViewportSize = {"width": 320, "height": 640}

# The application page of the embedding tests: it frames the Connect page the way
# openConnectUI does, answers `ready` only when the test hands it a token, and records
# every event the frame sends it.
APPLICATION_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Application</title></head>
<body><p>The application</p>
<script>
  const connectURL = new URL(new URLSearchParams(location.search).get('connect'));
  let frame = null;
  window.events = [];
  window.addEventListener('message', (event) => {
    if (!frame || event.origin !== connectURL.origin) return;
    if (event.source !== frame.contentWindow) return;
    window.events.push(event.data);
    if (event.data && event.data.type === 'close') { frame.remove(); frame = null; }
  });
  window.openConnect = () => {
    frame = document.createElement('iframe');
    frame.src = connectURL.href;
    frame.style.cssText = 'position:fixed;inset:0;width:100vw;height:100vh;border:0';
    document.body.append(frame);
  };
  window.post = (message) => frame.contentWindow.postMessage(message, '*');
</script>
</body></html>
"""

# Runs inside the Connect frame: resolves once a 'marker' message has been dispatched.
# The page's own listener was added first, so by then it has handled every earlier one.
INSTALL_MARKER_WAITER = """() => {
  window.markerSeen = new Promise((resolve) => {
    window.addEventListener('message', function seen(event) {
      if (event.data === 'marker') { window.removeEventListener('message', seen); resolve(); }
    });
  });
}"""


# Added to every document of the browser context (the Connect page, its frames, the
# sign-in window): keeps each message the document receives, with its origin. The
# callback page is kept from closing itself, so that a test can read what it received.
RECORD_MESSAGES = """
window.received = [];
window.addEventListener('message', (event) => {
  let data;
  try { data = JSON.parse(JSON.stringify(event.data)); } catch { data = String(event.data); }
  window.received.push({origin: event.origin, data});
}, true);
if (location.pathname === '/oauth/callback') {
  window.closeRequests = 0;
  window.close = () => { window.closeRequests += 1; };
}
"""
ACKNOWLEDGED = """() => window.received.some((m) =>
  m.data && m.data.type === 'nango_oauth_callback_ack')"""


@pytest.fixture
async def recorded(page: Page) -> Page:
    """The page, with every document of its context recording the messages it receives."""
    await page.context.add_init_script(RECORD_MESSAGES)
    return page


@pytest.fixture
async def application(gate: Gate) -> AsyncIterator[Callable[[str], str]]:
    """A second origin serving the application page; returns its URL for a Connect URL."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=APPLICATION_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/app", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()

    def url_for(connect_url: str) -> str:
        return f"http://127.0.0.1:{server.port}/app?connect={quote(connect_url, safe='')}"

    yield url_for
    await server.close()


async def expect_heading(page: Page | Frame, name: str) -> None:
    """The page's heading as a screen reader announces it (the logo tile is hidden)."""
    await expect(page.get_by_role("heading", level=1)).to_have_accessible_name(name)


async def focused(page: Page | Frame) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        """() => { const e = document.activeElement;
                   return {tag: e.tagName, id: e.id, text: e.textContent.trim(),
                           cls: e.className}; }"""
    )
    return result


async def tab_to(page: Page, predicate: Callable[[dict[str, Any]], bool], limit: int = 8) -> None:
    """Press Tab until the focused element satisfies `predicate` (at most `limit` times)."""
    seen = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        current = await focused(page)
        seen.append(current)
        if predicate(current):
            return
    raise AssertionError(f"Tab never reached the element; focus went through {seen}")


async def open_list(page: Page, link: str) -> None:
    await page.goto(link)
    await expect(page.locator(".choice")).to_have_count(len(INTEGRATION_NAMES))


# --- standalone: the connect link -------------------------------------------------------


async def test_link_lists_the_sessions_integrations_and_renders_forms(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    session = await gate_with_integrations.connect_session()
    await open_list(page, session.connect_link)
    names = await page.locator(".choice").all_inner_texts()
    # Listed by name, as a person scans them (the API lists them by key).
    assert [name.split("\n")[-1] for name in names] == INTEGRATION_NAMES
    # The token left the address bar (and the history) once read.
    assert "session_token" not in page.url
    await screenshots.take(page, "list")

    await page.get_by_role("button", name="Acme Keys").click()
    await expect_heading(page, "Connect Acme Keys")
    subdomain = page.get_by_label("Acme subdomain")
    api_key = page.get_by_label("Acme API key")
    await expect(subdomain).to_have_attribute("required", "")
    await expect(subdomain).to_have_attribute("placeholder", "my-team")
    await expect(api_key).to_have_attribute("type", "password")
    # The automated field is the server's to fill, never the user's.
    await expect(page.get_by_label("Region")).to_have_count(0)
    # Prefix and suffix surround the input and are read with it.
    described = await subdomain.get_attribute("aria-describedby") or ""
    assert await page.locator(".affix").all_inner_texts() == ["https://", ".acme.example"]
    assert {"config-subdomain-prefix", "config-subdomain-suffix", "config-subdomain-hint"} <= set(
        described.split()
    )
    hint = page.locator("#config-subdomain-hint")
    await expect(hint).to_contain_text("The first part of your Acme address.")
    where = hint.get_by_role("link", name="Where to find this")
    await expect(where).to_have_attribute("href", "https://docs.example.com/acme/connect#subdomain")
    await screenshots.take(page, "api-key-form")

    await page.get_by_role("button", name="Back").click()
    await page.get_by_role("button", name="Acme Legacy").click()
    await expect(page.get_by_label("Username")).to_be_visible()
    await expect(page.get_by_label("Password")).to_have_attribute("type", "password")
    await screenshots.take(page, "basic-form")
    assert_page_behaved(log, secret_registry, session.token)


async def test_keyboard_alone_reaches_the_form_and_errors_are_announced(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    session = await gate_with_integrations.connect_session()
    await open_list(page, session.connect_link)
    # Focus starts on the heading; Tab walks the choices.
    assert (await focused(page))["tag"] == "H1"
    await tab_to(page, lambda element: element["text"].endswith("Acme Keys"))
    await page.keyboard.press("Enter")
    await expect_heading(page, "Connect Acme Keys")
    assert (await focused(page))["tag"] == "H1"

    # Back, by keyboard, returns focus to the integration that was chosen.
    await page.keyboard.press("Shift+Tab")
    assert (await focused(page))["text"] == "Back"
    await page.keyboard.press("Enter")
    await expect(page.locator(".choice")).to_have_count(len(INTEGRATION_NAMES))
    assert (await focused(page))["text"].endswith("Acme Keys")
    await page.keyboard.press("Enter")

    await tab_to(page, lambda element: element["id"] == "config-subdomain")
    await page.keyboard.press("Enter")  # submit with nothing filled in
    subdomain = page.locator("#config-subdomain")
    api_key = page.locator("#credential-apiKey")
    summary = page.locator(".summary")
    await expect(summary).to_have_text("2 fields need your attention.")
    await expect(summary).to_have_attribute("role", "alert")
    for control, message in (
        (subdomain, "Enter Acme subdomain."),
        (api_key, "Enter Acme API key."),
    ):
        await expect(control).to_have_attribute("aria-invalid", "true")
        error_id = await control.evaluate("e => e.id") + "-error"
        described = (await control.get_attribute("aria-describedby") or "").split()
        assert error_id in described
        await expect(page.locator(f"#{error_id}")).to_have_text(message)
    # Focus goes to the first field that needs fixing.
    assert (await focused(page))["id"] == "config-subdomain"
    await screenshots.take(page, "errors")

    await page.keyboard.type("Not Valid")
    await page.keyboard.press("Tab")
    await page.keyboard.type(API_KEY_VALUE)
    await page.keyboard.press("Enter")
    await expect(summary).to_have_text("One field needs your attention.")
    await expect(page.locator("#config-subdomain-error")).to_have_text(
        "Acme subdomain does not have the expected form. For example: my-team"
    )
    await expect(api_key).to_have_attribute("aria-invalid", "false")
    assert (await focused(page))["id"] == "config-subdomain"

    # Once fixed, the error goes as the user types.
    await page.keyboard.press("Control+A")
    await page.keyboard.type("my-team")
    await expect(subdomain).to_have_attribute("aria-invalid", "false")
    await expect(page.locator("#config-subdomain-error")).to_have_text("")
    described = (await subdomain.get_attribute("aria-describedby") or "").split()
    assert "config-subdomain-error" not in described
    assert_page_behaved(log, secret_registry, session.token)


async def test_api_key_form_sends_the_documented_request_and_connects(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    session = await gate_with_integrations.connect_session()
    await open_list(page, session.connect_link)
    await page.get_by_role("button", name="Acme Keys").click()
    await page.get_by_label("Acme subdomain").fill(" my-team ")
    await page.get_by_label("Acme API key").fill(API_KEY_VALUE)
    async with page.expect_request(lambda r: "/api-auth/" in r.url) as captured:
        await page.get_by_role("button", name="Connect").click()
    request: Request = await captured.value

    url = urlsplit(request.url)
    assert request.method == "POST"
    assert f"{url.scheme}://{url.netloc}" == gate_with_integrations.origin
    assert url.path == "/api-auth/api-key/acme-keys"
    assert parse_qs(url.query) == {
        "connect_session_token": [session.token],
        "params[subdomain]": ["my-team"],  # trimmed; the automated field is not sent
    }
    assert request.post_data_json == {"apiKey": API_KEY_VALUE}
    headers = await request.all_headers()
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers

    response = await request.response()
    assert response is not None
    assert response.ok, await response.text()
    await expect_heading(page, "Connected")
    await screenshots.take(page, "connected")
    answer = await response.json()
    assert answer["providerConfigKey"] == "acme-keys"
    connection = await gate_with_integrations.connection("acme-keys", answer["connectionId"])
    assert connection["credentials"]["apiKey"] == API_KEY_VALUE
    assert connection["connection_config"] == {"subdomain": "my-team"}
    assert connection["end_user"]["id"] == "user-1"
    secret_registry.add(API_KEY_VALUE, "API key typed into the form")
    assert_page_behaved(log, secret_registry, session.token)


async def test_basic_form_connects(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    session = await gate_with_integrations.connect_session()
    await open_list(page, session.connect_link)
    await page.get_by_role("button", name="Acme Legacy").click()
    await page.get_by_label("Username").fill("ann")
    await page.get_by_label("Password").fill(BASIC_PASSWORD)
    await screenshots.take(page, "basic-form")
    async with page.expect_response(lambda r: "/api-auth/basic/" in r.url) as captured:
        await page.get_by_role("button", name="Connect").click()
    response = await captured.value
    assert response.ok, await response.text()
    await expect_heading(page, "Connected")
    answer = await response.json()
    connection = await gate_with_integrations.connection("acme-basic", answer["connectionId"])
    assert connection["credentials"]["username"] == "ann"
    assert connection["credentials"]["password"] == BASIC_PASSWORD
    secret_registry.add(BASIC_PASSWORD, "password typed into the form")
    assert_page_behaved(log, secret_registry, session.token)


async def test_a_key_the_provider_refuses_is_shown_and_can_be_corrected(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate = gate_with_integrations
    await gate.call(
        "POST", "/integrations", {"unique_key": "acme-checked", "provider": "acme-checked"}
    )
    session = await gate.connect_session(allowed=["acme-checked"])
    await page.goto(session.connect_link)
    await expect_heading(page, "Connect Acme Checked")
    await page.get_by_label("API key").fill(REFUSED_KEY)
    async with page.expect_response(lambda r: "/api-auth/api-key/" in r.url) as captured:
        await page.get_by_role("button", name="Connect").click()
    response = await captured.value
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "connection_test_failed"
    assert "GET /api/me answered 401" in error["message"]
    await expect(page.locator(".problem")).to_have_text(error["message"])
    await expect(page.get_by_role("button", name="Connect")).to_be_enabled()
    await expect(page.get_by_label("API key")).to_have_value(REFUSED_KEY)  # kept to correct
    await screenshots.take(page, "refused-key")
    assert await gate.connections() == []
    secret_registry.add(REFUSED_KEY, "API key typed into the form")
    assert_page_behaved(log, secret_registry, session.token)


async def test_a_provider_without_sign_in_connects_with_its_config(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate = gate_with_integrations
    await gate.call("POST", "/integrations", {"unique_key": "acme-open", "provider": "acme-open"})
    session = await gate.connect_session(allowed=["acme-open"])
    await page.goto(session.connect_link)
    await expect_heading(page, "Connect Acme Open")
    await page.get_by_label("Region").fill("eu")
    async with page.expect_response(lambda r: "/auth/unauthenticated/" in r.url) as captured:
        await page.get_by_role("button", name="Connect").click()
    response = await captured.value
    assert response.ok, await response.text()
    await expect_heading(page, "Connected")
    await screenshots.take(page, "connected-without-sign-in")
    stored = await gate.connection("acme-open", (await response.json())["connectionId"])
    assert stored["credentials"] == {}
    assert stored["connection_config"] == {"region": "eu"}
    assert_page_behaved(log, secret_registry, session.token)


async def test_narrow_screen_and_dark_theme(
    gate_with_integrations: Gate,
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    session = await gate_with_integrations.connect_session()
    await page.set_viewport_size(NARROW)
    await open_list(page, session.connect_link + "&theme=dark")
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    await screenshots.take(page, "list-320-dark")
    await page.get_by_role("button", name="Acme Keys").click()
    await expect_heading(page, "Connect Acme Keys")
    await screenshots.take(page, "form-320-dark")

    # Nothing sticks out sideways, and the input between prefix and suffix stays usable.
    assert await page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    box = await page.locator("#config-subdomain").bounding_box()
    assert box is not None
    assert box["width"] >= 80
    # Dark means light text on a dark card (relative luminance, WCAG's formula).
    card = await luminance(page, "#card", "background-color")
    text = await luminance(page, "#card", "color")
    assert card < 0.05
    assert (text + 0.05) / (card + 0.05) >= 7
    assert_page_behaved(log, secret_registry, session.token)


async def luminance(page: Page, selector: str, property_name: str) -> float:
    value: float = await page.locator(selector).evaluate(
        """(element, name) => {
             const linear = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
             const [r, g, b] = getComputedStyle(element)[name].match(/\\d+/g)
               .map((c) => linear(Number(c) / 255));
             return 0.2126 * r + 0.7152 * g + 0.0722 * b;
           }""",
        property_name.replace("-c", "C"),
    )
    return value


async def test_a_single_allowed_integration_opens_directly(
    gate_with_integrations: Gate, page: Page, log: BrowserLog, secret_registry: SecretRegistry
) -> None:
    session = await gate_with_integrations.connect_session(allowed=["acme-keys"])
    await page.goto(session.connect_link)
    await expect_heading(page, "Connect Acme Keys")
    await expect(page.get_by_role("button", name="Back")).to_be_hidden()
    assert_page_behaved(log, secret_registry, session.token)


async def test_an_unknown_or_malformed_session_says_so(
    gate_with_integrations: Gate, page: Page, log: BrowserLog, secret_registry: SecretRegistry
) -> None:
    never_issued = "nango_connect_session_" + "ab" * 32
    base = gate_with_integrations.origin + "/connect"
    await page.goto(f"{base}?session_token={never_issued}")
    await expect_heading(page, "Cannot connect")
    await expect(page.locator(".problem")).to_contain_text("expired or is not valid")

    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    await page.goto(f"{base}?session_token=not-a-session")
    await expect(page.locator(".problem")).to_contain_text("This link is not valid")
    # A token that cannot be one is never sent anywhere.
    assert [
        url
        for url in asked
        if "/connect/assets/" not in url
        and not url.endswith("/connect?session_token=not-a-session")
    ] == []
    assert_page_behaved(log, secret_registry, never_issued)


async def test_oauth_sign_in_runs_in_a_window_and_acknowledges_the_callback(
    gate_with_integrations: Gate,
    recorded: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    """Nothing to fill in for Acme Cloud: the click itself opens the window (a later,
    asynchronous open would be blocked) and the WebSocket the result comes back on; the
    window runs the whole flow against the fake authorization server."""
    gate, page = gate_with_integrations, recorded
    session = await gate.connect_session()
    await open_list(page, session.connect_link)
    async with page.expect_popup() as popup_info, page.expect_websocket() as socket_info:
        await page.get_by_role("button", name="Acme Cloud").click()
    popup = await popup_info.value
    socket = await socket_info.value
    assert socket.url == f"ws://{urlsplit(gate.origin).netloc}/"

    await expect_heading(page, "Connected")
    await screenshots.take(page, "oauth-connected")
    (authorize,) = gate.oauth.authorize_queries
    assert authorize["client_id"] == "acme-client"
    connections = await gate.connections()
    assert [c["provider_config_key"] for c in connections] == ["acme-cloud"]
    # The callback page told this page, from authgate's origin, and was acknowledged.
    received = await page.evaluate("window.received")
    assert {"origin": gate.origin, "data": {"type": "nango_oauth_callback_success"}} in received
    assert urlsplit(popup.url).path == "/oauth/callback"
    await popup.wait_for_function(ACKNOWLEDGED)
    acks = [m for m in await popup.evaluate("window.received") if m["data"]["type"].endswith("ack")]
    assert acks == [{"origin": gate.origin, "data": {"type": "nango_oauth_callback_ack"}}]
    register_provider_secrets(gate, secret_registry)
    assert_page_behaved(log, secret_registry, session.token)


async def test_callback_messages_from_another_origin_are_ignored(
    gate_with_integrations: Gate,
    recorded: Page,
    log: BrowserLog,
    secret_registry: SecretRegistry,
) -> None:
    """The sign-in window, while on the provider's origin, posts a forged callback error
    to this page. The page does not believe it: the flow goes on and succeeds."""
    gate, page = gate_with_integrations, recorded
    session = await gate.connect_session()
    forged = {"type": "nango_oauth_callback_error", "payload": {"errorType": "forged"}}
    gate.consent.forge = forged
    await open_list(page, session.connect_link)
    await page.get_by_role("button", name="Acme Cloud").click()
    await expect_heading(page, "Connected")
    received = await page.evaluate("window.received")
    assert {"origin": gate.consent_origin, "data": forged} in received
    register_provider_secrets(gate, secret_registry)
    assert_page_behaved(log, secret_registry, session.token)


# --- embedded: openConnectUI's protocol ---------------------------------------------------


async def open_embedded(page: Page, application: Callable[[str], str], gate: Gate) -> Frame:
    await page.goto(application(gate.origin + "/connect/?theme=dark"))
    await page.evaluate("window.openConnect()")
    await page.wait_for_function("window.events.some((e) => e.type === 'ready')")
    frame = page.frames[1]
    await expect(frame.locator(".status")).to_have_text("Waiting for the application\u2026")
    return frame


async def hand_token(page: Page, token: str) -> None:
    """The application answers the frame's `ready` with the token, as openConnectUI does."""
    await page.evaluate(
        "(token) => window.post({type: 'session_token', sessionToken: token})", token
    )


@pytest.mark.parametrize("how", ["Escape", "close button"])
async def test_embedded_page_takes_the_token_from_its_parent_and_closes(
    gate_with_integrations: Gate,
    application: Callable[[str], str],
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
    how: str,
) -> None:
    session = await gate_with_integrations.connect_session()
    frame = await open_embedded(page, application, gate_with_integrations)
    await hand_token(page, session.token)
    await expect(frame.locator(".choice")).to_have_count(len(INTEGRATION_NAMES))
    await expect(frame.locator("#card")).to_have_attribute("role", "dialog")
    await screenshots.take(page, "embedded-list")

    if how == "Escape":
        await frame.locator("h1").press("Escape")
    else:
        await frame.get_by_role("button", name="Close").click()
    await page.wait_for_function("document.querySelector('iframe') === null")
    assert await page.evaluate("window.events") == [{"type": "ready"}, {"type": "close"}]
    assert_page_behaved(log, secret_registry, session.token)


async def test_embedded_page_accepts_only_well_formed_tokens_from_its_parent(
    gate_with_integrations: Gate,
    application: Callable[[str], str],
    page: Page,
    log: BrowserLog,
    secret_registry: SecretRegistry,
) -> None:
    parents = await gate_with_integrations.connect_session()
    intruders = await gate_with_integrations.connect_session(allowed=["acme-keys"])
    sent_tokens: list[str] = []

    def record(request: Request) -> None:
        authorization = request.headers.get("authorization", "")
        sent_tokens.append(authorization.removeprefix("Bearer "))

    page.context.on("request", record)
    frame = await open_embedded(page, application, gate_with_integrations)
    await frame.evaluate(INSTALL_MARKER_WAITER)
    # A valid token, but from the frame itself rather than from its parent...
    await frame.evaluate(
        "(token) => window.postMessage({type: 'session_token', sessionToken: token}, '*')",
        intruders.token,
    )
    # ...and from the parent, messages of the wrong shape.
    malformed: list[Any] = [
        "session_token",
        {"type": "session_token"},
        {"type": "session_token", "sessionToken": [parents.token]},
        {"type": "session_token", "sessionToken": "nango_connect_session_xyz"},
        {"type": "token", "sessionToken": parents.token},
    ]
    for message in [*malformed, "marker"]:
        await page.evaluate("(message) => window.post(message)", message)
    await frame.evaluate("window.markerSeen")
    await expect(frame.locator(".status")).to_have_text("Waiting for the application\u2026")

    await page.evaluate(
        "(token) => window.post({type: 'session_token', sessionToken: token})", parents.token
    )
    await expect(frame.locator(".choice")).to_have_count(len(INTEGRATION_NAMES))
    assert intruders.token not in sent_tokens
    assert parents.token in sent_tokens
    assert_page_behaved(log, secret_registry, parents.token, intruders.token)


async def test_embedded_page_reports_a_failed_session_to_its_parent(
    gate_with_integrations: Gate,
    application: Callable[[str], str],
    page: Page,
    log: BrowserLog,
    secret_registry: SecretRegistry,
) -> None:
    never_issued = "nango_connect_session_" + "cd" * 32
    frame = await open_embedded(page, application, gate_with_integrations)
    await hand_token(page, never_issued)
    await expect(frame.locator(".problem")).to_contain_text("expired or is not valid")
    events: list[dict[str, Any]] = await page.evaluate("window.events")
    assert events[0] == {"type": "ready"}
    assert events[1]["type"] == "error"
    assert set(events[1]["payload"]) == {"errorType", "errorMessage"}
    assert events[1]["payload"]["errorType"] == "unknown_connect_session_token"
    assert_page_behaved(log, secret_registry, never_issued)


async def test_embedded_oauth_with_a_tenant_tells_the_parent_the_connection(
    gate_with_integrations: Gate,
    application: Callable[[str], str],
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate = gate_with_integrations
    session = await gate.connect_session()
    frame = await open_embedded(page, application, gate)
    await hand_token(page, session.token)
    await frame.get_by_role("button", name="Acme Tenant").click()
    await frame.get_by_role("textbox", name="Tenant", exact=True).fill("north")
    await screenshots.take(page, "embedded-tenant-form")
    await frame.get_by_role("button", name="Connect").click()
    await expect_heading(frame, "Connected")
    await screenshots.take(page, "embedded-connected")

    events: list[dict[str, Any]] = await page.evaluate("window.events")
    assert [event["type"] for event in events] == ["ready", "connect"]
    payload = events[1]["payload"]
    assert payload["providerConfigKey"] == "acme-tenant"
    assert set(payload) <= {"providerConfigKey", "connectionId", "isPending"}
    connection = await gate.connection("acme-tenant", payload["connectionId"])
    assert connection["connection_config"]["tenant"] == "north"
    (authorize,) = gate.oauth.authorize_queries
    assert authorize["client_id"] == "acme-client"

    await frame.get_by_role("button", name="Done").click()
    await page.wait_for_function("document.querySelector('iframe') === null")
    assert [e["type"] for e in await page.evaluate("window.events")] == [
        "ready",
        "connect",
        "close",
    ]
    register_provider_secrets(gate, secret_registry)
    assert_page_behaved(log, secret_registry, session.token)


async def test_embedded_oauth_refusal_is_shown_and_reported(
    gate_with_integrations: Gate,
    application: Callable[[str], str],
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate = gate_with_integrations
    gate.oauth.refusal = ("access_denied", "The user said no")
    session = await gate.connect_session()
    frame = await open_embedded(page, application, gate)
    await hand_token(page, session.token)
    await frame.get_by_role("button", name="Acme Cloud").click()
    problem = frame.locator(".problem")
    await expect(problem).not_to_be_empty()
    await expect_heading(frame, "Connect Acme Cloud")  # back at the form, to try again
    await screenshots.take(page, "embedded-refused")

    events: list[dict[str, Any]] = await page.evaluate("window.events")
    assert [event["type"] for event in events] == ["ready", "error"]
    error = events[1]["payload"]
    assert error["errorType"] == "callback_err"
    await expect(problem).to_have_text(error["errorMessage"])
    assert await gate.connections() == []
    assert_page_behaved(log, secret_registry, session.token)


async def test_embedded_api_key_form_tells_the_parent_the_connection(
    gate_with_integrations: Gate,
    application: Callable[[str], str],
    page: Page,
    log: BrowserLog,
    screenshots: Screenshots,
    secret_registry: SecretRegistry,
) -> None:
    gate = gate_with_integrations
    session = await gate.connect_session()
    frame = await open_embedded(page, application, gate)
    await hand_token(page, session.token)
    await frame.get_by_role("button", name="Acme Keys").click()
    await frame.get_by_label("Acme subdomain").fill("embedded")
    await frame.get_by_label("Acme API key").fill(API_KEY_VALUE)
    await frame.get_by_role("button", name="Connect").click()
    await expect_heading(frame, "Connected")
    await screenshots.take(page, "embedded-api-key-connected")

    events: list[dict[str, Any]] = await page.evaluate("window.events")
    assert [event["type"] for event in events] == ["ready", "connect"]
    payload = events[1]["payload"]
    assert payload["providerConfigKey"] == "acme-keys"
    connection = await gate.connection("acme-keys", payload["connectionId"])
    assert connection["connection_config"] == {"subdomain": "embedded"}
    secret_registry.add(API_KEY_VALUE, "API key typed into the form")
    assert_page_behaved(log, secret_registry, session.token)
