"""Installing a GitHub App from the popup, end to end, on both store backends.

`/oauth/connect/{key}` sends the browser to the app's installation page (a fake GitHub
page here, which records what it was sent and returns the browser to the Setup URL the
way GitHub does); `/app-auth/connect` redeems the state, mints the installation token
through the app (the fake GitHub API verifies the RS256 app JWT), and stores the
connection, which then works through the proxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.e2e.conftest import Authgate, Factory, json_of
from tests.e2e.management_calls import call
from tests.e2e.mode_fakes import KeyPair, ModeFake, app_only_accounts, rsa_pair, serve
from tests.e2e.test_oauth_flows import Popup, popup
from tests.log_scan import SecretRegistry

PROVIDERS = """
mode-app:
    display_name: Mode APP
    docs: https://docs.example.com/mode-app
    auth_mode: APP
    token_url: >-
        http://127.0.0.1:${connectionConfig.token_port}/app/installations/${connectionConfig.installation_id}/access_tokens
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/bearer
"""
APP_ID = "424242"
INSTALLATION_ID = "31337"
APP_PATH = "/apps/authgate-test"


@dataclass
class InstallPage:
    """GitHub's installation page: the user picks an account, GitHub sends the browser to
    the app's Setup URL with the installation, the action, and the state it was given."""

    setup_url: str = ""
    installation_id: str = INSTALLATION_ID
    setup_action: str = "install"
    visits: list[dict[str, list[str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(APP_PATH + "/installations/new", self._install)
        return app

    async def _install(self, request: web.Request) -> web.Response:
        query = parse_qs(request.query_string)
        self.visits.append(query)
        back = {"installation_id": self.installation_id, "setup_action": self.setup_action}
        back.update({"state": query["state"][0]} if "state" in query else {})
        location = str(URL(self.setup_url).with_query(back))
        return web.Response(status=302, headers={"Location": location})


@dataclass
class Flow:
    gate: Authgate
    api: ModeFake
    page: InstallPage
    api_port: int
    app_link: str
    browser: aiohttp.ClientSession

    async def session_token(self) -> str:
        body = {"end_user": {"id": "user-3"}}
        status, answer = await call(self.gate, "POST", "/connect/sessions", body=body)
        assert status == 201, answer
        token: str = answer["data"]["token"]
        return token

    def connect_url(self, key: str, token: str) -> URL:
        query = {
            "connect_session_token": token,
            "params[port]": str(self.api_port),
            "params[token_port]": str(self.api_port),
        }
        return self.gate.url.with_path(f"/oauth/connect/{key}").with_query(query)

    async def install(self, key: str = "app") -> Popup:
        return await popup(self.browser, self.connect_url(key, await self.session_token()))

    async def connections(self) -> list[dict[str, object]]:
        status, answer = await call(self.gate, "GET", "/connections")
        assert status == 200, answer
        listed: list[dict[str, object]] = answer["connections"]
        return listed


@pytest.fixture(scope="module")
def app_key() -> KeyPair:
    return rsa_pair()


@pytest.fixture
async def flow(
    make_authgate: Factory, tmp_path: Path, app_key: KeyPair, secret_registry: SecretRegistry
) -> AsyncIterator[Flow]:
    accounts = app_only_accounts(APP_ID, INSTALLATION_ID, app_key.public_pem)
    api = ModeFake(accounts)
    page = InstallPage()
    providers = tmp_path / "app-providers.yaml"
    providers.write_text(PROVIDERS)
    async with serve(api.app) as api_port, serve(page.app()) as page_port:
        gate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
        page.setup_url = str(gate.url.with_path("/app-auth/connect"))
        link = f"http://127.0.0.1:{page_port}{APP_PATH}"
        app = {
            "type": "APP",
            "app_id": APP_ID,
            "app_link": link,
            "private_key": app_key.private_pem,
        }
        await gate.integration("app", "mode-app", credentials=app)
        await gate.integration(
            "app-slug-only", "mode-app", credentials={**app, "app_link": "authgate-test"}
        )
        other = {**app, "private_key": rsa_pair().private_pem}
        await gate.integration("app-other-key", "mode-app", credentials=other)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            yield Flow(gate, api, page, api_port, link, browser)
        for issued in api.issued:
            secret_registry.add(issued.token, "installation token")


def page_result(page: Popup) -> tuple[bool, str | None]:
    result = page.result()
    return result["ok"], result.get("errorType")


async def test_installing_the_app_stores_a_working_connection(flow: Flow) -> None:
    page = await flow.install()

    assert (page.status, page_result(page)) == (200, (True, None)), page.text
    # The popup went to the app's installation page, with a state, and came back.
    hops = [urlsplit(hop.url).path for hop in page.hops]
    assert hops == ["/oauth/connect/app", APP_PATH + "/installations/new", "/app-auth/connect"]
    [visit] = flow.page.visits
    assert len(visit["state"][0]) >= 43
    assert flow.api.refusals == []
    [minted] = flow.api.issued
    [listed] = await flow.connections()
    status, connection = await call(
        flow.gate, "GET", f"/connections/{listed['connection_id']}?provider_config_key=app"
    )
    assert status == 200, connection
    assert connection["credentials"]["type"] == "APP"
    assert connection["credentials"]["access_token"] == minted.token
    assert connection["connection_config"] == {
        "port": str(flow.api_port),
        "token_port": str(flow.api_port),
        "installation_id": INSTALLATION_ID,
        "app_id": APP_ID,
        "appPublicLink": flow.app_link,
    }
    assert connection["end_user"]["id"] == "user-3"
    response = await flow.gate.proxy(
        "GET",
        "/proxy/repos",
        connection_id=str(listed["connection_id"]),
        provider_config_key="app",
    )
    assert response.status == 200, await json_of(response)


async def test_an_installation_waiting_for_approval_is_refused(flow: Flow) -> None:
    flow.page.setup_action = "request"

    page = await flow.install()

    assert (page.status, page_result(page)) == (400, (False, "callback_err"))
    assert "approval" in page.result()["message"]
    assert flow.api.issued == []
    assert await flow.connections() == []


async def test_a_state_is_redeemed_once(flow: Flow) -> None:
    first = await flow.install()
    assert page_result(first) == (True, None)
    back = first.hops[-1].url

    again = await popup(flow.browser, back)

    assert page_result(again) == (False, "state_err")
    assert len(flow.api.issued) == 1


async def test_an_update_made_on_github_without_a_flow_gets_a_quiet_page(flow: Flow) -> None:
    url = flow.gate.url.with_path("/app-auth/connect").with_query(
        installation_id=INSTALLATION_ID, setup_action="update"
    )
    async with flow.browser.get(url) as response:
        text = await response.text()
    assert response.status == 200
    assert "<script" not in text  # tells no opener anything
    assert await flow.connections() == []


async def test_a_forged_installation_id_is_refused(flow: Flow) -> None:
    flow.page.installation_id = "31337&installation_id=1"

    page = await flow.install()

    assert page_result(page) == (False, "callback_err")
    assert flow.api.token_calls["app"] == 0


async def test_an_app_link_that_is_not_a_url_cannot_start(flow: Flow) -> None:
    page = await flow.install("app-slug-only")

    assert page_result(page) == (False, "provider_config_err")
    assert flow.page.visits == []


async def test_a_refused_app_jwt_is_a_token_error_and_nothing_is_stored(flow: Flow) -> None:
    page = await flow.install("app-other-key")

    assert page_result(page) == (False, "token_err")
    assert flow.api.refusals != []
    assert await flow.connections() == []
