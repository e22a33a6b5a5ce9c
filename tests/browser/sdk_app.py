"""The official `@nangohq/frontend` SDK, installed from npm, in an application page.

`sdk_installed` (session) makes sure tests/browser/sdk/node_modules holds exactly what
package-lock.json pins (`npm ci`, skipped when a stamp left by the last install still
matches package.json and the lock). One installer runs at a time: parallel pytest
workers share the directory. A missing npm or a failed install fails the tests.

`sdk_application` serves the application that uses the SDK, on an origin of its own
(127.0.0.1, another port than authgate's), so that everything the SDK does crosses
origins as it does for a real customer: its `fetch` calls need CORS, its popup and the
Connect UI frame belong to authgate's origin. The page loads the package's `dist/` as
ES modules, unbundled, as published, and offers the tests a few functions on `window`
(see APPLICATION_PAGE), called through `page.evaluate`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from tests.npm_packages import PinnedPackage

SDK_DIR: Final = Path(__file__).resolve().parent / "sdk"
SDK: Final = PinnedPackage(
    SDK_DIR,
    "@nangohq/frontend",
    "0.71.10",
    # Outside node_modules, which `npm ci` deletes while another worker may hold the lock.
    lock_file=SDK_DIR.parent.parent / ".cache" / "browser-sdk-install.lock",
)
DIST: Final = SDK.root / "dist"
# A bound on waiting for the SDK's promise, not a delay: an OAuth flow crosses four
# servers and a popup, and CI shares two cores.
SETTLE_TIMEOUT_MS: Final = 20_000
_MODULE_NAME: Final = "{name:[A-Za-z][A-Za-z0-9]*\\.js}"

# The application. Its module imports the SDK from this origin's /sdk/, exactly as a
# bundler would lay out the published files. What the tests call:
#   startAuth(host, token, key, options[, method]): `new Nango({host, connectSessionToken})
#     .auth(key[, options])` (or `.create` for a provider without sign-in), started within
#     the caller's task (the SDK opens its popup
#     synchronously); the settled outcome lands in `window.authOutcome`:
#     {ok: true, result} or {ok: false, type, message, authError}.
#   openUI(baseURL, apiURL, token): `new Nango().openConnectUI({baseURL, apiURL,
#     onEvent})`, kept in `window.connectUI`, then (in the same task, so before the frame
#     can be ready) `setSessionToken(token)` unless token is null; each event onEvent
#     receives lands in `window.events`.
# Every message the window receives is kept, with its origin, in `window.received`.
APPLICATION_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Application</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}pre{white-space:pre-wrap}</style>
</head>
<body><h1>The application</h1><p>It uses @nangohq/frontend.</p><pre id="outcome"></pre>
<script type="module">
import Nango, { AuthError } from '/sdk/index.js';

const copy = (value) => JSON.parse(JSON.stringify(value ?? null));
const show = (value) => {
  document.getElementById('outcome').textContent = JSON.stringify(value, null, 2);
};

window.received = [];
window.addEventListener('message', (event) => {
  let data;
  try { data = copy(event.data); } catch { data = String(event.data); }
  window.received.push({ origin: event.origin, data });
});

async function settle(promise) {
  try {
    return { ok: true, result: copy(await promise) };
  } catch (error) {
    const authError = error instanceof AuthError;
    const type = authError ? error.type : null;
    return { ok: false, authError, type, message: String(error?.message) };
  }
}

window.startAuth = (host, token, key, options, method = 'auth') => {
  window.authOutcome = undefined;
  const nango = new Nango({ host, connectSessionToken: token });
  let pending;
  try {
    pending = options === null ? nango[method](key) : nango[method](key, options);
  } catch (error) {
    pending = Promise.reject(error);
  }
  void settle(pending).then((outcome) => { window.authOutcome = outcome; show(outcome); });
};

window.events = [];
window.openUI = (baseURL, apiURL, token) => {
  const onEvent = (event) => { window.events.push(copy(event)); show(window.events); };
  window.connectUI = new Nango().openConnectUI({ baseURL, apiURL, onEvent });
  if (token !== null) window.connectUI.setSessionToken(token);
};

window.sdkLoaded = true;
</script>
</body></html>
"""


@pytest.fixture(scope="session")
def sdk_installed() -> None:
    SDK.install()


# --- the application -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """How the promise of `nango.auth` settled."""

    ok: bool
    result: Any = None
    auth_error: bool = False
    type: str | None = None
    message: str | None = None

    @classmethod
    def from_page(cls, raw: dict[str, Any]) -> AuthOutcome:
        return cls(
            ok=raw["ok"],
            result=raw.get("result"),
            auth_error=raw.get("authError", False),
            type=raw.get("type"),
            message=raw.get("message"),
        )


@dataclass(frozen=True, slots=True)
class SdkApplication:
    """The application page's origin, and what a test does with it in a page."""

    origin: str

    async def open(self, page: Page) -> None:
        await page.goto(f"{self.origin}/app")
        await page.wait_for_function("window.sdkLoaded === true")

    async def start_auth(
        self,
        page: Page,
        host: str,
        token: str,
        key: str,
        options: dict[str, Any] | None = None,
        *,
        method: str = "auth",
    ) -> None:
        """Calls `nango.auth` (or `nango.create`) and returns at once (a popup flow goes
        on meanwhile)."""
        await page.evaluate(
            "([host, token, key, options, method]) =>"
            " window.startAuth(host, token, key, options, method)",
            [host, token, key, options, method],
        )

    async def auth_outcome(self, page: Page) -> AuthOutcome:
        """Waits (bounded) for the promise `start_auth` began to settle."""
        await page.wait_for_function("window.authOutcome !== undefined", timeout=SETTLE_TIMEOUT_MS)
        raw: dict[str, Any] = await page.evaluate("window.authOutcome")
        return AuthOutcome.from_page(raw)

    async def auth(
        self,
        page: Page,
        host: str,
        token: str,
        key: str,
        options: dict[str, Any] | None = None,
        *,
        method: str = "auth",
    ) -> AuthOutcome:
        await self.start_auth(page, host, token, key, options, method=method)
        return await self.auth_outcome(page)

    async def open_connect_ui(
        self, page: Page, base_url: str, api_url: str, token: str | None = None
    ) -> None:
        await page.evaluate(
            "([baseURL, apiURL, token]) => window.openUI(baseURL, apiURL, token)",
            [base_url, api_url, token],
        )

    async def set_session_token(self, page: Page, token: str) -> None:
        await page.evaluate("(token) => window.connectUI.setSessionToken(token)", token)

    async def events(self, page: Page) -> list[dict[str, Any]]:
        """What the SDK's `onEvent` has received so far."""
        events: list[dict[str, Any]] = await page.evaluate("window.events")
        return events

    async def received(self, page: Page) -> list[dict[str, Any]]:
        """Every message the application window received, with its origin."""
        received: list[dict[str, Any]] = await page.evaluate("window.received")
        return received


def _published_modules() -> dict[str, bytes]:
    """The package's ES modules, by file name (read once: `npm ci` by another worker
    must not change them under a running test)."""
    modules = {path.name: path.read_bytes() for path in DIST.glob("*.js")}
    if "index.js" not in modules:
        pytest.fail(f"{DIST} holds no index.js: is {SDK.name} {SDK.version} installed?")
    return modules


def _application(modules: dict[str, bytes]) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=APPLICATION_PAGE, content_type="text/html")

    async def module(request: web.Request) -> web.Response:
        body = modules.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        # A module script is refused unless it comes as JavaScript.
        return web.Response(body=body, content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/app", page)
    app.router.add_get(f"/sdk/{_MODULE_NAME}", module)
    return app


@pytest.fixture
async def sdk_application(sdk_installed: None) -> AsyncIterator[SdkApplication]:
    server = TestServer(_application(_published_modules()), host="127.0.0.1")
    await server.start_server()
    try:
        yield SdkApplication(origin=f"http://127.0.0.1:{server.port}")
    finally:
        await server.close()
