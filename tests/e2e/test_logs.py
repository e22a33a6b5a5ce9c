"""The proxy's logs, end to end: one structured access line per proxied request, and no
credential value in any log record, whatever the outcome.

Records are captured from the real server (same event loop, real sockets) and rendered
with the production `JsonFormatter`, and also with a plain `logging.Formatter` (which
prints exception messages and tracebacks), so a secret cannot hide in either rendering.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from credentials.expiry import iso_expiry
from credentials.jsonlog import JsonFormatter
from proxy.access_log import ACCESS_FIELD_NAMES
from proxy.compat import REQUEST_ID_HEADER
from proxy.headers import caller_header_layers
from tests.e2e.conftest import Authgate, Factory, json_of, ok_handler
from tests.e2e.token_provider import TokenProvider, serve_token_provider

ACCESS_TOKEN = "at-LOGLEAK-7c1f2e9a"
REFRESH_TOKEN = "rt-LOGLEAK-a93b40d1"
API_KEY = "ak-LOGLEAK-55d0e1c3"
BASIC_PASSWORD = "pw-LOGLEAK-c2f8a7b6"
CLIENT_SECRET = "cs-LOGLEAK-0be6f4a2"
QUERY_SECRET = "qs-LOGLEAK-e4d2b8c0"
PROXY_AUTH = "pa-LOGLEAK-91aa3e57"
BODY_SECRET = "bd-LOGLEAK-3f7d0c11"
USERINFO_SECRET = "ui-LOGLEAK-6b2e9d40"
REDIRECT_SECRET = "rd-LOGLEAK-d15a7e28"
UNKNOWN_KEY = "0b6a3b4e-9b1c-4f7e-8a2d-3c4b5a6d7e8f"
MALFORMED_KEY = "mk-LOGLEAK-8e0c4a6f"


def secrets(authgate: Authgate) -> list[str]:
    basic = base64.b64encode(f"ann:{BASIC_PASSWORD}".encode()).decode()
    return [
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        API_KEY,
        BASIC_PASSWORD,
        basic,
        CLIENT_SECRET,
        QUERY_SECRET,
        PROXY_AUTH,
        BODY_SECRET,
        USERINFO_SECRET,
        REDIRECT_SECRET,
        UNKNOWN_KEY,
        MALFORMED_KEY,
        authgate.secret_key,
    ]


class AccessLines(logging.Handler):
    """Collects `authgate.access` records and lets a test await the n-th one: the line is
    written after the response has gone out, so reading the response is no barrier."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not ready():
                self._changed.clear()
                await self._changed.wait()

    def lines_for(self, request_id: str) -> list[dict[str, Any]]:
        formatter = JsonFormatter()
        lines = [orjson.loads(formatter.format(record)) for record in self.records]
        return [line for line in lines if line.get("request_id") == request_id]


@dataclass
class Logs:
    caplog: pytest.LogCaptureFixture
    access: AccessLines

    async def next_line(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        """The one access line of the request answered by `response`."""
        await response.read()
        request_id = response.headers[REQUEST_ID_HEADER]
        await self.access.wait_until(lambda: bool(self.access.lines_for(request_id)))
        lines = self.access.lines_for(request_id)
        assert len(lines) == 1, lines
        line = lines[0]
        # Exactly the documented fields: the fast path (jsonlog.log_flat) skips
        # redaction because none of these names is secret-looking.
        assert set(line) - {"time", "level", "logger", "message"} == set(ACCESS_FIELD_NAMES), line
        assert line["logger"] == "authgate.access"
        assert line["level"] == "info"
        return line

    def assert_clean(self, authgate: Authgate) -> None:
        """No secret in any record of any logger at any level, in either rendering."""
        plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
        structured = JsonFormatter()
        assert self.caplog.records, "nothing was captured: the capture is broken"
        for record in self.caplog.records:
            renderings = [structured.format(record), plain.format(record), repr(record.__dict__)]
            if record.exc_info and record.exc_info[1] is not None:
                renderings.append(repr(record.exc_info[1]))
            for text in renderings:
                for secret in secrets(authgate):
                    assert secret not in text, f"{secret} leaked in {record.name}: {text}"


@pytest.fixture
async def logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Logs]:
    # Production never runs aiohttp's access log (configure_logging disables it, and
    # serving passes access_log=None); the test server would, so mirror production.
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    caplog.set_level(logging.DEBUG)
    handler = AccessLines()
    access_logger = logging.getLogger("authgate.access")
    access_logger.addHandler(handler)
    try:
        yield Logs(caplog, handler)
    finally:
        access_logger.removeHandler(handler)


async def _connections(authgate: Authgate) -> None:
    config = {"port": str(authgate.provider_port)}
    await authgate.integration(
        "oauth",
        "fake-oauth",
        credentials={"type": "OAUTH2", "client_id": "cid", "client_secret": CLIENT_SECRET},
    )
    await authgate.connection(
        "oauth",
        "conn-1",
        {"type": "OAUTH2", "access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN},
    )
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("keyed", "conn-k", {"type": "API_KEY", "apiKey": API_KEY})
    await authgate.integration("basic", "fake-basic")
    await authgate.connection(
        "basic",
        "conn-b",
        {"type": "BASIC", "username": "ann", "password": BASIC_PASSWORD},
        connection_config=config,
    )


async def test_one_access_line_per_proxied_request(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    assert logs.access.records == []  # management calls write no access line
    response = await authgate.proxy("GET", f"/proxy/items/42?api_key={QUERY_SECRET}&page=2")
    line = await logs.next_line(response)
    assert response.status == 200
    assert line["environment"] == "dev"
    assert line["integration"] == "oauth"
    assert line["connection"] == "conn-1"
    assert line["method"] == "GET"
    assert line["host"] == f"127.0.0.1:{authgate.provider_port}"
    assert line["path"] == "/proxy/items/42"
    assert line["query_keys"] == ["api_key", "page"]
    assert line["status"] == 200
    assert line["error"] is None
    assert line["retries"] == 0
    assert line["retry_reasons"] == []
    assert line["activity_log_id"] is None
    assert (line["refresh"], line["rate_limit"], line["reauthorized"]) == (None, None, False)
    assert response.headers[REQUEST_ID_HEADER] == line["request_id"]
    assert line["bytes_in"] == 0
    assert line["bytes_out"] == len(await response.read())
    assert line["bytes_out"] > 0
    for timing in ("upstream_ms", "overhead_ms"):
        assert isinstance(line[timing], float | int)
        assert line[timing] >= 0
    assert line["upstream_ms"] > 0

    body = orjson.dumps({"secret": BODY_SECRET})
    response = await authgate.proxy(
        "POST",
        "/proxy/upload?x=1",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    line = await logs.next_line(response)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/proxy/upload", 200)
    assert line["bytes_in"] == len(body)
    assert len(logs.access.records) == 2
    logs.assert_clean(authgate)


async def test_retries_are_counted(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    answers = iter([503, 502, 200])

    async def flaky(request: web.Request) -> web.StreamResponse:
        return web.Response(status=next(answers), headers={"Retry-After": "0"})

    authgate.provider.respond("/flaky", flaky)
    response = await authgate.proxy("GET", "/proxy/flaky", headers={"Retries": "5"})
    line = await logs.next_line(response)
    assert (line["status"], line["retries"]) == (200, 2)
    assert len(line["retry_reasons"]) == 2
    assert all(isinstance(reason, str) and reason for reason in line["retry_reasons"])
    assert len(logs.access.records) == 1


async def test_request_ids_are_unique(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    seen = set()
    for _ in range(5):
        line = await logs.next_line(await authgate.proxy("GET", "/proxy/x"))
        seen.add(line["request_id"])
    assert len(seen) == 5
    assert len(logs.access.records) == 5


Send = Callable[[Authgate], Awaitable[aiohttp.ClientResponse]]


def _stalling(authgate: Authgate) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.get_running_loop().create_future()  # the provider never answers
        raise AssertionError("unreachable")

    authgate.provider.respond("/stall", stall)


def _redirecting(authgate: Authgate, location: str, status: int = 302) -> None:
    authgate.provider.respond("/old", ok_handler(status=status, headers={"Location": location}))


def _upstream_401(authgate: Authgate) -> None:
    authgate.provider.respond(
        "/denied", ok_handler(status=401, body=b'{"message":"Bad credentials"}')
    )


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    target: str
    status: int
    error: str | None
    integration: str | None = "oauth"
    connection: str | None = "conn-1"
    headers: tuple[tuple[str, str], ...] = ()
    key: str | None = None
    prepare: Callable[[Authgate], None] | None = None
    expect_host: bool = True


CASES = [
    Case("ok oauth", "GET", f"/proxy/me?api_key={QUERY_SECRET}", 200, None),
    Case(
        "ok api key (header and query injected)",
        "GET",
        f"/proxy/items?token={QUERY_SECRET}",
        200,
        None,
        integration="keyed",
        connection="conn-k",
    ),
    Case(
        "ok basic",
        "GET",
        f"/proxy/me?secret={QUERY_SECRET}",
        200,
        None,
        integration="basic",
        connection="conn-b",
    ),
    Case(
        "Nango-Proxy-Authorization override",
        "GET",
        "/proxy/me",
        200,
        None,
        headers=(("Nango-Proxy-Authorization", f"Bearer {PROXY_AUTH}"),),
    ),
    Case(
        "unknown secret key",
        "GET",
        f"/proxy/me?api_key={QUERY_SECRET}",
        401,
        "unknown_account",
        integration=None,
        connection=None,
        key=UNKNOWN_KEY,
        expect_host=False,
    ),
    Case(
        "malformed secret key",
        "GET",
        "/proxy/me",
        401,
        "invalid_secret_key_format",
        integration=None,
        connection=None,
        key=MALFORMED_KEY,
        expect_host=False,
    ),
    Case(
        "unknown connection",
        "GET",
        f"/proxy/me?api_key={QUERY_SECRET}",
        404,
        "unknown_connection",
        connection="nobody",
        expect_host=False,
    ),
    Case(
        "invalid control headers",
        "GET",
        f"/proxy/me?api_key={QUERY_SECRET}",
        400,
        "invalid_headers",
        integration=None,
        connection=None,
        headers=(("Retries", "99"), ("Nango-Proxy-Authorization", f"Bearer {PROXY_AUTH}")),
        expect_host=False,
    ),
    Case(
        "unreachable provider",
        "GET",
        f"/proxy/me?api_key={QUERY_SECRET}",
        502,
        "upstream_unreachable",
        headers=(("Base-Url-Override", "http://127.0.0.1:9"),),
    ),
    Case(
        "provider answers 401",
        "GET",
        f"/proxy/denied?api_key={QUERY_SECRET}",
        401,
        None,
        prepare=_upstream_401,
    ),
    Case(
        "same-origin redirect",
        "GET",
        f"/proxy/old?api_key={QUERY_SECRET}",
        200,
        None,
        prepare=lambda authgate: _redirecting(authgate, f"/new?code={REDIRECT_SECRET}"),
    ),
    Case(
        "cross-origin redirect",
        "GET",
        "/proxy/old",
        200,
        None,
        prepare=lambda authgate: _redirecting(
            authgate,
            f"http://localhost:{authgate.provider_port}/landing?code={REDIRECT_SECRET}",
            307,
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_outcomes_log_one_line_and_no_secret(
    authgate: Authgate, logs: Logs, case: Case
) -> None:
    await _connections(authgate)
    if case.prepare is not None:
        case.prepare(authgate)
    response = await authgate.proxy(
        case.method,
        case.target,
        connection_id="conn-1" if case.connection is None else case.connection,
        provider_config_key="oauth" if case.integration is None else case.integration,
        headers=dict(case.headers),
        key=case.key,
    )
    line = await logs.next_line(response)
    assert response.status == case.status, await response.text()
    assert line["status"] == case.status
    assert line["error"] == case.error
    assert line["integration"] == case.integration
    assert line["connection"] == case.connection
    assert line["environment"] == (None if case.key else "dev")
    assert line["path"] == case.target.split("?", 1)[0]
    assert (line["host"] is not None) == case.expect_host
    if case.error is not None:
        assert (await json_of(response))["error"]["code"] == case.error
    assert len(logs.access.records) == 1
    logs.assert_clean(authgate)


async def test_timeout_logs_one_line_and_no_secret(make_authgate: Factory, logs: Logs) -> None:
    authgate = await make_authgate(AUTHGATE_UPSTREAM_READ_TIMEOUT="0.2")
    await _connections(authgate)
    _stalling(authgate)
    response = await authgate.proxy("GET", f"/proxy/stall?api_key={QUERY_SECRET}")
    line = await logs.next_line(response)
    assert (response.status, line["status"], line["error"]) == (504, 504, "upstream_timeout")
    assert line["upstream_ms"] >= 200
    assert len(logs.access.records) == 1
    logs.assert_clean(authgate)


async def test_userinfo_in_base_url_override_is_not_logged(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    override = f"http://user:{USERINFO_SECRET}@127.0.0.1:{authgate.provider_port}"
    response = await authgate.proxy("GET", "/proxy/me", headers={"Base-Url-Override": override})
    line = await logs.next_line(response)
    # Refused or forwarded, the userinfo never reaches the line (nor the answer).
    assert line["status"] == response.status
    assert line["host"] in (None, f"127.0.0.1:{authgate.provider_port}")
    assert USERINFO_SECRET not in await response.text()
    assert len(logs.access.records) == 1
    logs.assert_clean(authgate)


async def test_unusable_stored_credentials_leak_nothing(authgate: Authgate, logs: Logs) -> None:
    """A stored token the proxy cannot put in a header (a line break in it) fails the
    call; whatever the failure, the token must not reach a log record."""
    await _connections(authgate)
    broken = f"{ACCESS_TOKEN}\nX-Injected: 1"
    await authgate.connection("oauth", "broken", {"type": "OAUTH2", "access_token": broken})
    response = await authgate.proxy("GET", "/proxy/me", connection_id="broken")
    line = await logs.next_line(response)
    assert line["status"] == response.status
    assert response.status >= 400
    assert authgate.provider.received == []
    assert len(logs.access.records) == 1
    logs.assert_clean(authgate)


async def test_management_errors_leak_nothing(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    for body in (
        {"provider_config_key": "oauth", "credentials": {"type": "OAUTH2", "access_token": 1}},
        {
            "provider_config_key": "nope",
            "credentials": {"type": "OAUTH2", "access_token": ACCESS_TOKEN},
        },
        {
            "provider_config_key": "oauth",
            "connection_id": "x",
            "credentials": {"type": "API_KEY", "apiKey": API_KEY},
        },
        {
            "provider_config_key": "oauth",
            "metadata": {"deep": _deep(100), "token": REFRESH_TOKEN},
            "credentials": {"type": "OAUTH2", "access_token": ACCESS_TOKEN},
        },
    ):
        response = await authgate.post_json("/connections", body)
        assert 400 <= response.status < 500
    response = await authgate.post_json("/connections", {"x": 1}, key=UNKNOWN_KEY)
    assert response.status == 401
    assert logs.access.records == []
    await logs.next_line(await authgate.proxy("GET", "/proxy/x"))  # something is captured
    logs.assert_clean(authgate)


def _deep(levels: int) -> Any:
    value: Any = BODY_SECRET
    for _ in range(levels):
        value = [value]
    return value


@contextmanager
def _no_access_lines(access: AccessLines) -> Iterator[None]:
    before = len(access.records)
    yield
    assert len(access.records) == before


async def test_health_and_management_write_no_access_line(authgate: Authgate, logs: Logs) -> None:
    with _no_access_lines(logs.access):
        await _connections(authgate)
        for path in ("/health", "/ready"):
            response = await authgate.session.get(authgate.url.with_path(path))
            assert response.status == 200
    # A proxied request afterwards is the barrier: its line is the first one.
    line = await logs.next_line(await authgate.proxy("GET", "/proxy/x"))
    assert line["status"] == 200
    assert len(logs.access.records) == 1


async def test_the_providers_own_request_id_header_survives(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    authgate.provider.respond("/ided", ok_handler(headers={"X-Request-Id": "provider-id-1"}))
    response = await authgate.proxy("GET", "/proxy/ided")
    line = await logs.next_line(response)
    # Ours is a header of its own: the provider's id reaches the caller untouched.
    assert REQUEST_ID_HEADER.lower() != "x-request-id"
    assert response.headers.getall("X-Request-Id") == ["provider-id-1"]
    assert line["request_id"] == response.headers[REQUEST_ID_HEADER] != "provider-id-1"


# --- query names, activity log ids, refresh outcomes ---------------------------------------


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("", []),
        (f"?{QUERY_SECRET}", ["?"]),
        (f"?x=1&{QUERY_SECRET}&y=", ["x", "?", "y"]),
        (f"?{QUERY_SECRET}=1", ["?"]),  # looks like a name, but not like one a program writes
        (f"?a%20b={QUERY_SECRET}&list[]=1&list[]=2", ["?", "list[]", "list[]"]),
        ("?" + "&".join(f"k{n}=v" for n in range(40)), [*(f"k{n}" for n in range(32)), "..."]),
    ],
    ids=["none", "bare value", "bare value among names", "odd name", "encoded name", "many"],
)
async def test_only_query_parameter_names_are_logged(
    authgate: Authgate, logs: Logs, query: str, keys: list[str]
) -> None:
    await _connections(authgate)
    line = await logs.next_line(await authgate.proxy("GET", f"/proxy/search{query}"))
    assert line["path"] == "/proxy/search"
    assert line["query_keys"] == keys
    logs.assert_clean(authgate)


async def test_the_activity_log_id_is_on_the_line(authgate: Authgate, logs: Logs) -> None:
    await _connections(authgate)
    response = await authgate.proxy("GET", "/proxy/x", headers={"Nango-Activity-Log-Id": "op-7"})
    line = await logs.next_line(response)
    assert line["activity_log_id"] == "op-7"


ROTATING_PROVIDERS = """
fake-rotating:
    display_name: Fake rotating OAuth
    docs: https://docs.example.com/fake-rotating
    auth_mode: OAUTH2
    token_url: http://127.0.0.1:${connectionConfig.token_port}/oauth/token
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
"""


async def test_the_refresh_outcome_is_on_the_line_and_no_token_is(
    make_authgate: Factory, logs: Logs, tmp_path: Path
) -> None:
    providers = tmp_path / "rotating.yaml"
    providers.write_text(ROTATING_PROVIDERS)
    authgate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    client = {"type": "OAUTH2", "client_id": "log-client", "client_secret": CLIENT_SECRET}
    tokens = TokenProvider(client_id="log-client", client_secret=CLIENT_SECRET)
    async with serve_token_provider(tokens) as port:
        await authgate.integration("rot", "fake-rotating", credentials=client)
        seeded = tokens.seed("c1")
        expired = {
            "type": "OAUTH2",
            "access_token": seeded.access_token,
            "refresh_token": seeded.refresh_token,
            "expires_at": iso_expiry(time.time() - 60),
        }
        config = {"port": str(port), "token_port": str(port)}
        await authgate.connection("rot", "c1", expired, connection_config=config)
        response = await authgate.proxy(
            "GET", "/proxy/api/me", connection_id="c1", provider_config_key="rot"
        )
        line = await logs.next_line(response)
        assert response.status == 200, await response.text()
        assert line["refresh"] == "renewed"
        renewed = tokens.ledgers["c1"].current_refresh_token
    issued = [seeded.access_token, seeded.refresh_token, renewed]
    for record in logs.caplog.records:
        text = JsonFormatter().format(record)
        for token in issued:
            assert token not in text, f"a token leaked in {record.name}"
    logs.assert_clean(authgate)


# --- trace context -----------------------------------------------------------------------


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_trace_context_reaches_the_provider_unchanged(authgate: Authgate) -> None:
    await _connections(authgate)
    response = await authgate.proxy(
        "GET",
        "/proxy/traced",
        headers={"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7,congo=t61"},
    )
    assert response.status == 200, await response.text()
    received = authgate.provider.last()
    assert received.header("traceparent") == TRACEPARENT
    assert received.header("tracestate") == "rojo=00f067aa0ba902b7,congo=t61"


async def test_repeated_tracestate_lines_are_all_forwarded_in_order(authgate: Authgate) -> None:
    await _connections(authgate)
    target = URL(str(authgate.url).rstrip("/") + "/proxy/traced", encoded=True)
    headers = CIMultiDict(
        [
            *authgate.auth().items(),
            ("Connection-Id", "conn-1"),
            ("Provider-Config-Key", "oauth"),
            ("traceparent", TRACEPARENT),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61"),
        ]
    )
    response = await authgate.session.get(target, headers=headers)
    assert response.status == 200, await response.text()
    lines = [v for k, v in authgate.provider.last().headers if k.lower() == "tracestate"]
    assert lines == ["rojo=00f067aa0ba902b7", "congo=t61"]


async def test_without_trace_context_none_is_invented(authgate: Authgate) -> None:
    await _connections(authgate)
    response = await authgate.proxy("GET", "/proxy/untraced", headers={"traceparent": ""})
    assert response.status == 200, await response.text()
    names = authgate.provider.last().header_names()
    assert "traceparent" not in names
    assert "tracestate" not in names


def test_trace_context_headers_are_caller_overrides() -> None:
    """They ride in the override layer, so no injected or provider header replaces them."""
    defaults, overrides = caller_header_layers(
        [("traceparent", TRACEPARENT), ("Accept", "*/*"), ("Authorization", "Bearer key")]
    )
    assert overrides == [("traceparent", TRACEPARENT)]
    assert defaults == [("Accept", "*/*")]
