"""Connect sessions end to end (§8, §2.1, §2.3): a backend creates a session with its
secret key, a frontend uses the token, and the token stops working when it ends.

Everything runs against a real `authgate serve` on a real socket, on SQLite and
PostgreSQL. What the API does not show (the stored tags, the hoisted webhook override) is
read back from the same database through the session storage itself. Expiry is tested
without waiting: a session is issued by a storage whose clock runs 31 minutes behind.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from authgate.operator import create_environment
from credentials.config import CoreSettings
from credentials.database import Database, open_database
from credentials.jsonlog import JsonFormatter
from credentials.models import Environment
from credentials.sessions import (
    SESSION_TTL_MS,
    ConnectSession,
    ConnectSessionStore,
    ReconnectTarget,
    SessionSpec,
    hash_token,
)
from credentials.store import now_ms
from management.errors import ApiError
from management.request_context import CONNECT_SESSION, ENVIRONMENT
from management.routes.connect import delete_session
from management.sessions import ConnectSessionPrincipal
from management.settings import ManagementSettings
from tests.e2e.conftest import Authgate, Factory, json_of

TOKEN = re.compile(r"^nango_connect_session_[0-9a-f]{64}$")
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MALFORMED = (
    "Authentication failed. The provided connect session token is not following correct "
    "format: nango_connect_session_RANDOM)"
)
UNKNOWN = "Authentication failed. The provided connect session token does not match any account."
NEVER_ISSUED = "nango_connect_session_" + "0" * 64
DEFAULT_UI = {
    "theme": {"light": {"primary": "#00B2E3"}, "dark": {"primary": "#00B2E3"}},
    "defaultTheme": "system",
    "showWatermark": True,
}
END_USER = {"id": "user-1", "email": "ann@example.com", "display_name": "Ann"}
DEPRECATED_NOTE = (
    ". Note: connection_config.webhook_url is deprecated; use top-level webhook_url_override"
    " instead."
)
PRIVATE = "Webhook URL cannot point to a loopback, private or link-local address"
_UNSET = object()


# --- helpers -----------------------------------------------------------------------------


async def call(
    authgate: Authgate,
    method: str,
    path: str,
    *,
    body: Any = _UNSET,
    raw: bytes | None = None,
    bearer: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One management call; returns (status, parsed JSON or None for a 204). Every other
    answer must be JSON, and every error must name its code in X-Authgate-Error."""
    sent = {**authgate.auth(bearer), **(headers or {})}
    url = str(authgate.url).rstrip("/") + path
    kwargs: dict[str, Any] = {"headers": sent}
    if raw is not None:
        kwargs.update(data=io.BytesIO(raw), skip_auto_headers=["Content-Type"])
    elif body is not _UNSET:
        kwargs["json"] = body
    async with authgate.session.request(method, url, **kwargs) as response:
        if response.status == 204:
            assert await response.read() == b""
            return 204, None
        assert response.content_type == "application/json", await response.text()
        payload = await json_of(response)
        if response.status >= 400:
            assert response.headers["X-Authgate-Error"] == payload["error"]["code"]
        return response.status, payload


async def create(authgate: Authgate, body: Any, path: str = "/connect/sessions") -> str:
    status, payload = await call(authgate, "POST", path, body=body)
    assert status == 201, payload
    token: str = payload["data"]["token"]
    return token


async def session_of(authgate: Authgate, token: str) -> dict[str, Any]:
    status, payload = await call(authgate, "GET", "/connect/session", bearer=token)
    assert status == 200, payload
    assert set(payload) == {"data"}
    data: dict[str, Any] = payload["data"]
    return data


def issues(payload: Any) -> list[dict[str, Any]]:
    assert payload["error"]["code"] == "invalid_body", payload
    found: list[dict[str, Any]] = payload["error"]["errors"]
    return found


def paths(payload: Any) -> list[list[str]]:
    return [item["path"] for item in issues(payload)]


def assert_auth_error(status: int, payload: Any, code: str, message: str) -> None:
    assert status == 401, payload
    assert payload == {"error": {"message": message, "code": code, "payload": {}}}


class Sessions:
    """The server's session storage, opened on the same database from the test."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.store = ConnectSessionStore(db)

    async def environment(self, name: str = "dev") -> Environment:
        row = await self.db.fetchrow("SELECT id, name FROM environments WHERE name = $1", name)
        assert row is not None
        return Environment(int(row["id"]), row["name"])

    async def stored(self, token: str) -> ConnectSession:
        resolved = await self.store.resolve(token)
        assert resolved is not None
        return resolved.session

    async def issue(self, spec: SessionSpec, *, age_ms: int = 0) -> str:
        """A session as if created `age_ms` ago."""
        environment = await self.environment()
        issuer = ConnectSessionStore(self.db, clock=lambda: now_ms() - age_ms)
        return (await issuer.create(environment.id, spec)).token

    async def count(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM connect_sessions"))


@pytest.fixture
async def sessions(authgate: Authgate) -> AsyncIterator[Sessions]:
    db = await open_database(authgate.environ["DATABASE_URL"])
    try:
        yield Sessions(db)
    finally:
        await db.close()


@pytest.fixture
async def ready(authgate: Authgate) -> Authgate:
    """Two integrations and one connection (with an end user) to point sessions at."""
    await authgate.integration("github", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection(
        "keyed",
        "conn-1",
        {"type": "API_KEY", "apiKey": "ak"},
        end_user={"id": "owner-9", "email": "owner@example.com", "display_name": "Owner"},
    )
    return authgate


# --- POST /connect/sessions: success -----------------------------------------------------


async def test_create_returns_token_link_and_expiry(authgate: Authgate) -> None:
    before = datetime.now(UTC)
    status, payload = await call(authgate, "POST", "/connect/sessions", body={"end_user": END_USER})
    after = datetime.now(UTC)
    assert status == 201
    assert set(payload) == {"data"}
    data = payload["data"]
    assert set(data) == {"token", "connect_link", "expires_at"}
    assert TOKEN.fullmatch(data["token"])
    public_url = ManagementSettings.from_env(authgate.environ).public_url
    assert data["connect_link"] == f"{public_url}/connect?session_token={data['token']}"
    assert ISO_MS_Z.fullmatch(data["expires_at"])
    expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
    ttl = timedelta(minutes=30)
    assert before + ttl - timedelta(milliseconds=1) <= expires <= after + ttl


async def test_every_session_gets_its_own_token(authgate: Authgate) -> None:
    tokens = {await create(authgate, {"end_user": END_USER}) for _ in range(3)}
    assert len(tokens) == 3


@pytest.mark.parametrize(
    ("configured", "link_base"),
    [
        ("https://connect.example.com", "https://connect.example.com/"),
        ("https://connect.example.com/", "https://connect.example.com/"),
        ("https://example.com/ui/connect", "https://example.com/ui/connect"),
    ],
)
async def test_connect_link_follows_the_configured_ui_url(
    make_authgate: Factory, configured: str, link_base: str
) -> None:
    authgate = await make_authgate(AUTHGATE_CONNECT_UI_URL=configured)
    status, payload = await call(authgate, "POST", "/connect/sessions", body={"end_user": END_USER})
    assert status == 201
    token = payload["data"]["token"]
    assert payload["data"]["connect_link"] == f"{link_base}?session_token={token}"


async def test_default_connect_ui_follows_the_public_url(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_PUBLIC_URL="https://gate.example.com/")
    status, payload = await call(authgate, "POST", "/connect/sessions", body={"end_user": END_USER})
    assert status == 201
    token = payload["data"]["token"]
    expected = f"https://gate.example.com/connect?session_token={token}"
    assert payload["data"]["connect_link"] == expected


async def test_tags_alone_replace_the_end_user(authgate: Authgate, sessions: Sessions) -> None:
    token = await create(authgate, {"tags": {"Customer": "acme"}})
    data = await session_of(authgate, token)
    assert data == {"endUser": None, "connectUISettings": DEFAULT_UI}
    assert (await sessions.stored(token)).spec.tags == {"customer": "acme"}


async def test_empty_tags_also_replace_the_end_user(authgate: Authgate) -> None:
    token = await create(authgate, {"tags": {}})
    assert (await session_of(authgate, token))["endUser"] is None


async def test_end_user_and_organization_generate_tags(
    authgate: Authgate, sessions: Sessions
) -> None:
    token = await create(
        authgate,
        {
            "end_user": {**END_USER, "tags": {"Plan": "pro", "region": "eu"}},
            "organization": {"id": "org-7", "display_name": "Acme"},
            "tags": {"region": "us", "extra": "x"},
        },
    )
    stored = await sessions.stored(token)
    assert stored.spec.tags == {
        "end_user_id": "user-1",
        "end_user_email": "ann@example.com",
        "end_user_display_name": "Ann",
        "organization_id": "org-7",
        "organization_display_name": "Acme",
        "plan": "pro",
        "region": "us",  # explicit tags win over generated ones
        "extra": "x",
    }
    data = await session_of(authgate, token)
    assert data["endUser"] == {
        "id": "user-1",
        "display_name": "Ann",
        "email": "ann@example.com",
        "tags": {"plan": "pro", "region": "eu"},
        "organization": {"id": "org-7", "display_name": "Acme"},
    }


async def test_end_user_tags_that_would_overflow_are_dropped(
    authgate: Authgate, sessions: Sessions
) -> None:
    many = {f"k{index}": "v" for index in range(8)}  # 3 generated + 8 > 10
    token = await create(authgate, {"end_user": {**END_USER, "tags": many}})
    assert (await sessions.stored(token)).spec.tags == {
        "end_user_id": "user-1",
        "end_user_email": "ann@example.com",
        "end_user_display_name": "Ann",
    }


async def test_long_generated_values_are_cut_and_empty_ones_left_out(
    authgate: Authgate, sessions: Sessions
) -> None:
    email = "a" * 300 + "@example.com"
    token = await create(authgate, {"end_user": {"id": "u", "email": email, "display_name": ""}})
    tags = (await sessions.stored(token)).spec.tags
    assert tags == {"end_user_id": "u", "end_user_email": email[:255]}


async def test_the_union_of_tags_may_not_exceed_ten(authgate: Authgate) -> None:
    explicit = {f"k{index}": "v" for index in range(8)}
    status, payload = await call(
        authgate, "POST", "/connect/sessions", body={"end_user": END_USER, "tags": explicit}
    )
    assert status == 400
    assert paths(payload) == [["tags"]]
    assert issues(payload)[0]["code"] == "too_big"


async def test_a_full_session_is_shown_to_the_connect_ui(
    ready: Authgate, sessions: Sessions
) -> None:
    token = await create(
        ready,
        {
            "end_user": END_USER,
            "allowed_integrations": ["github", "keyed"],
            "integrations_config_defaults": {
                "github": {
                    "user_scopes": "chat:write",
                    "authorization_params": {"prompt": "consent"},
                    "connection_config": {"oauth_scopes_override": "repo", "subdomain": "x"},
                },
                "keyed": {"authorization_params": {}},
            },
            "overrides": {"github": {"docs_connect": ""}, "keyed": {}},
            "webhook_url_override": "https://hooks.example.com/in",
        },
    )
    data = await session_of(ready, token)
    assert data == {
        "endUser": {
            "id": "user-1",
            "display_name": "Ann",
            "email": "ann@example.com",
            "tags": None,
            "organization": None,
        },
        "connectUISettings": DEFAULT_UI,
        "allowed_integrations": ["github", "keyed"],
        # user_scopes is applied server-side; the UI sees what it fills forms with.
        "integrations_config_defaults": {
            "github": {
                "connection_config": {"oauth_scopes_override": "repo", "subdomain": "x"},
                "authorization_params": {"prompt": "consent"},
            },
            "keyed": {"authorization_params": {}},
        },
        "overrides": {"github": {"docs_connect": ""}, "keyed": {}},
    }
    stored = await sessions.stored(token)
    assert stored.spec.webhook_url_override == "https://hooks.example.com/in"
    assert stored.spec.integrations_config_defaults is not None
    assert stored.spec.integrations_config_defaults["github"]["user_scopes"] == "chat:write"


async def test_empty_allowed_integrations_means_all(ready: Authgate) -> None:
    token = await create(ready, {"end_user": END_USER, "allowed_integrations": []})
    assert "allowed_integrations" not in await session_of(ready, token)
    status, payload = await call(ready, "GET", "/integrations", bearer=token)
    assert status == 200
    assert {item["unique_key"] for item in payload["data"]} == {"github", "keyed"}


# --- deprecated connection_config.webhook_url ----------------------------------------------


async def test_deprecated_webhook_url_is_hoisted_and_removed(
    ready: Authgate, sessions: Sessions
) -> None:
    token = await create(
        ready,
        {
            "end_user": END_USER,
            "integrations_config_defaults": {
                "github": {"connection_config": {"webhook_url": "", "a": 1}},
                "keyed": {"connection_config": {"webhook_url": "https://one.example.com/h"}},
            },
        },
    )
    data = await session_of(ready, token)
    # Removed from the defaults; an emptied connection_config disappears entirely.
    assert data["integrations_config_defaults"] == {
        "github": {"connection_config": {"a": 1}},
        "keyed": {},
    }
    stored = await sessions.stored(token)
    assert stored.spec.webhook_url_override == "https://one.example.com/h"


@pytest.mark.parametrize(
    ("explicit", "stored_value"), [("https://x.example.com", None), ("", None)]
)
async def test_an_explicit_webhook_url_override_wins(
    ready: Authgate, sessions: Sessions, explicit: str, stored_value: str | None
) -> None:
    token = await create(
        ready,
        {
            "end_user": END_USER,
            "webhook_url_override": explicit,
            "integrations_config_defaults": {
                "github": {"connection_config": {"webhook_url": "https://old.example.com/h"}}
            },
        },
    )
    stored = await sessions.stored(token)
    assert stored.spec.webhook_url_override == (explicit or stored_value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8080/h", PRIVATE),
        ("not a url", "Invalid URL"),
        ("https://api.nango.dev/h", "Webhook URL cannot point to nango.dev"),
    ],
)
async def test_a_bad_deprecated_webhook_url_names_its_place(
    ready: Authgate, url: str, message: str
) -> None:
    status, payload = await call(
        ready,
        "POST",
        "/connect/sessions",
        body={
            "end_user": END_USER,
            "integrations_config_defaults": {"github": {"connection_config": {"webhook_url": url}}},
        },
    )
    assert status == 400
    assert issues(payload) == [
        {
            "code": "invalid_format",
            "message": message + DEPRECATED_NOTE,
            "path": ["integrations_config_defaults", "github", "connection_config", "webhook_url"],
        }
    ]


async def test_a_non_string_deprecated_webhook_url_is_refused(ready: Authgate) -> None:
    body = {
        "end_user": END_USER,
        "integrations_config_defaults": {"github": {"connection_config": {"webhook_url": 5}}},
    }
    status, payload = await call(ready, "POST", "/connect/sessions", body=body)
    assert status == 400
    (problem,) = issues(payload)
    assert problem["code"] == "invalid_type"
    assert problem["message"].endswith(DEPRECATED_NOTE)


# --- webhook_url_override ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/in", "http://8.8.8.8/h", "https://[2001:4860::8888]/", ""]
)
async def test_public_or_empty_webhook_url_override_is_accepted(
    authgate: Authgate, url: str
) -> None:
    await create(authgate, {"end_user": END_USER, "webhook_url_override": url})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:3000/h", PRIVATE),
        ("http://127.0.0.1/h", PRIVATE),
        ("http://127.1/h", PRIVATE),
        ("http://2130706433/h", PRIVATE),
        ("http://[::1]/h", PRIVATE),
        ("http://[::ffff:192.168.1.1]/h", PRIVATE),
        ("http://10.1.2.3/h", PRIVATE),
        ("http://172.16.0.1/h", PRIVATE),
        ("http://192.168.0.10/h", PRIVATE),
        ("http://169.254.169.254/latest/meta-data", PRIVATE),
        ("http://[fe80::1]/h", PRIVATE),
        ("http://0.0.0.0/h", PRIVATE),
        ("https://nango.dev/h", "Webhook URL cannot point to nango.dev"),
        ("https://api.NANGO.dev./h", "Webhook URL cannot point to nango.dev"),
        ("ftp://example.com/h", "Invalid URL"),
        ("example.com/h", "Invalid URL"),
        ("http://999.1.1.1/h", "Invalid URL"),
        ("http://exa mple.com/", "Invalid URL"),
    ],
)
async def test_private_or_invalid_webhook_url_override_is_refused(
    authgate: Authgate, sessions: Sessions, url: str, message: str
) -> None:
    body = {"end_user": END_USER, "webhook_url_override": url}
    status, payload = await call(authgate, "POST", "/connect/sessions", body=body)
    assert status == 400
    assert issues(payload) == [
        {"code": "invalid_format", "message": message, "path": ["webhook_url_override"]}
    ]
    assert await sessions.count() == 0


# --- POST /connect/sessions: validation ---------------------------------------------------


async def test_end_user_is_required_without_tags(authgate: Authgate, sessions: Sessions) -> None:
    for body in ({}, {"organization": {"id": "o"}}, {"tags": None}):
        status, payload = await call(authgate, "POST", "/connect/sessions", body=body)
        assert status == 400
        assert {
            "code": "invalid_type",
            "message": "Invalid input: expected object, received undefined",
            "path": ["end_user"],
        } in issues(payload)
    assert await sessions.count() == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"end_user": END_USER, "foo": 1, "bar": 2},
            [
                {
                    "code": "unrecognized_keys",
                    "message": 'Unrecognized keys: "foo", "bar"',
                    "path": [],
                }
            ],
        ),
        (
            {"end_user": {**END_USER, "phone": "1"}},
            [
                {
                    "code": "unrecognized_keys",
                    "message": 'Unrecognized key: "phone"',
                    "path": ["end_user"],
                }
            ],
        ),
        (
            {"end_user": {"email": "a@b.co"}},
            [
                {
                    "code": "invalid_type",
                    "message": "Invalid input: expected string, received undefined",
                    "path": ["end_user", "id"],
                }
            ],
        ),
        (
            {"end_user": {"id": ""}},
            [
                {
                    "code": "too_small",
                    "message": "Too small: expected string to have >=1 characters",
                    "path": ["end_user", "id"],
                }
            ],
        ),
        (
            {"end_user": {"id": "u" * 256}},
            [
                {
                    "code": "too_big",
                    "message": "Too big: expected string to have <=255 characters",
                    "path": ["end_user", "id"],
                }
            ],
        ),
        (
            {"end_user": {"id": "u", "email": "nope"}},
            [
                {
                    "code": "invalid_format",
                    "message": "Invalid email address",
                    "path": ["end_user", "email"],
                }
            ],
        ),
        (
            {"end_user": {"id": "u", "display_name": "d" * 256}},
            [
                {
                    "code": "too_big",
                    "message": "Too big: expected string to have <=255 characters",
                    "path": ["end_user", "display_name"],
                }
            ],
        ),
        (
            {"end_user": "user-1"},
            [
                {
                    "code": "invalid_type",
                    "message": "Invalid input: expected object, received string",
                    "path": ["end_user"],
                }
            ],
        ),
        (
            {"end_user": END_USER, "organization": {"display_name": "x"}},
            [
                {
                    "code": "invalid_type",
                    "message": "Invalid input: expected string, received undefined",
                    "path": ["organization", "id"],
                }
            ],
        ),
        (
            {"end_user": END_USER, "organization": {"id": "", "name": "x"}},
            [
                {
                    "code": "unrecognized_keys",
                    "message": 'Unrecognized key: "name"',
                    "path": ["organization"],
                }
            ],
        ),
        (
            {"end_user": END_USER, "organization": {"id": "o", "display_name": "d" * 256}},
            [
                {
                    "code": "too_big",
                    "message": "Too big: expected string to have <=255 characters",
                    "path": ["organization", "display_name"],
                }
            ],
        ),
    ],
)
async def test_end_user_and_organization_rules(
    authgate: Authgate, sessions: Sessions, body: dict[str, Any], expected: list[Any]
) -> None:
    status, payload = await call(authgate, "POST", "/connect/sessions", body=body)
    assert status == 400
    assert issues(payload) == expected
    assert await sessions.count() == 0


@pytest.mark.parametrize(
    ("tags", "code", "path"),
    [
        ({f"k{index}": "v" for index in range(11)}, "too_big", ["tags"]),
        ({"1abc": "v"}, "invalid_format", ["tags", "1abc"]),
        ({"a b": "v"}, "invalid_format", ["tags", "a b"]),
        ({"k" * 65: "v"}, "too_big", ["tags", "k" * 65]),
        ({"Plan": "a", "plan": "b"}, "custom", ["tags", "plan"]),
        ({"plan": ""}, "too_small", ["tags", "plan"]),
        ({"plan": "v" * 256}, "too_big", ["tags", "plan"]),
        ({"plan": 5}, "invalid_type", ["tags", "plan"]),
        ({"End_User_Email": "not-an-email"}, "invalid_format", ["tags", "End_User_Email"]),
        ([], "invalid_type", ["tags"]),
    ],
)
async def test_tag_rules(authgate: Authgate, tags: Any, code: str, path: list[str]) -> None:
    for body in ({"tags": tags, "end_user": END_USER}, {"end_user": {**END_USER, "tags": tags}}):
        where = path if "tags" in body and body["tags"] is tags else ["end_user", *path]
        status, payload = await call(authgate, "POST", "/connect/sessions", body=body)
        assert status == 400
        assert [(item["code"], item["path"]) for item in issues(payload)] == [(code, where)]


async def test_duplicate_tag_key_message(authgate: Authgate) -> None:
    body = {"tags": {"Plan": "a", "plan": "b"}}
    status, payload = await call(authgate, "POST", "/connect/sessions", body=body)
    assert status == 400
    assert issues(payload) == [
        {
            "code": "custom",
            "message": 'Duplicate tag key after case normalization: "plan"',
            "path": ["tags", "plan"],
        }
    ]


@pytest.mark.parametrize(
    ("body", "expected_paths"),
    [
        ({"allowed_integrations": "github"}, [["allowed_integrations"]]),
        (
            {"allowed_integrations": ["github", 5, "bad/key", ""]},
            [
                ["allowed_integrations", "1"],
                ["allowed_integrations", "2"],
                ["allowed_integrations", "3"],
            ],
        ),
        ({"integrations_config_defaults": []}, [["integrations_config_defaults"]]),
        (
            {"integrations_config_defaults": {"github": 1}},
            [["integrations_config_defaults", "github"]],
        ),
        (
            {"integrations_config_defaults": {"bad/key": {}}},
            [["integrations_config_defaults", "bad/key"]],
        ),
        (
            {"integrations_config_defaults": {"github": {"scopes": "x"}}},
            [["integrations_config_defaults", "github"]],
        ),
        (
            {"integrations_config_defaults": {"github": {"user_scopes": ["a"]}}},
            [["integrations_config_defaults", "github", "user_scopes"]],
        ),
        (
            {"integrations_config_defaults": {"github": {"authorization_params": {"a": 1}}}},
            [["integrations_config_defaults", "github", "authorization_params", "a"]],
        ),
        (
            {"integrations_config_defaults": {"github": {"connection_config": []}}},
            [["integrations_config_defaults", "github", "connection_config"]],
        ),
        (
            {
                "integrations_config_defaults": {
                    "github": {"connection_config": {"oauth_scopes_override": ["a"]}}
                }
            },
            [
                [
                    "integrations_config_defaults",
                    "github",
                    "connection_config",
                    "oauth_scopes_override",
                ]
            ],
        ),
        ({"overrides": "x"}, [["overrides"]]),
        ({"overrides": {"github": []}}, [["overrides", "github"]]),
        ({"overrides": {"github": {"docs_connect": 1}}}, [["overrides", "github", "docs_connect"]]),
        ({"overrides": {"k" * 256: {}}}, [["overrides", "k" * 256]]),
        ({"webhook_url_override": None}, [["webhook_url_override"]]),
    ],
)
async def test_field_rules_name_the_field(
    ready: Authgate, sessions: Sessions, body: dict[str, Any], expected_paths: list[list[str]]
) -> None:
    status, payload = await call(
        ready, "POST", "/connect/sessions", body={"end_user": END_USER, **body}
    )
    assert status == 400, payload
    assert paths(payload) == expected_paths
    assert await sessions.count() == 0


async def test_every_problem_is_reported_at_once(authgate: Authgate) -> None:
    body = {
        "end_user": {"id": ""},
        "organization": 1,
        "tags": {"1": "x"},
        "allowed_integrations": [1],
        "webhook_url_override": "http://localhost/",
        "unknown": True,
    }
    status, payload = await call(authgate, "POST", "/connect/sessions", body=body)
    assert status == 400
    assert sorted(paths(payload)) == sorted(
        [
            [],
            ["end_user", "id"],
            ["organization"],
            ["tags", "1"],
            ["allowed_integrations", "0"],
            ["webhook_url_override"],
        ]
    )


async def test_overrides_entries_drop_unknown_keys(ready: Authgate) -> None:
    token = await create(
        ready, {"end_user": END_USER, "overrides": {"github": {"docs_connect": "", "x": 1}}}
    )
    assert (await session_of(ready, token))["overrides"] == {"github": {"docs_connect": ""}}


# --- POST /connect/sessions: integrations must exist, docs_connect is refused ----------------


async def test_missing_integrations_are_reported_where_named(
    ready: Authgate, sessions: Sessions
) -> None:
    body = {
        "end_user": END_USER,
        "allowed_integrations": ["github", "nope", "keyed", "gone"],
        "integrations_config_defaults": {"github": {}, "absent": {}},
        "overrides": {"missing": {}, "keyed": {}},
    }
    status, payload = await call(ready, "POST", "/connect/sessions", body=body)
    assert status == 400
    assert payload["error"]["code"] == "invalid_body"
    assert issues(payload) == [
        {"code": "custom", "message": "Integration does not exist", "path": path}
        for path in (
            ["allowed_integrations", "1"],
            ["allowed_integrations", "3"],
            ["integrations_config_defaults", "absent"],
            ["overrides", "missing"],
        )
    ]
    assert await sessions.count() == 0


async def test_docs_connect_override_is_forbidden(ready: Authgate, sessions: Sessions) -> None:
    body = {"end_user": END_USER, "overrides": {"github": {"docs_connect": "https://docs.x"}}}
    status, payload = await call(ready, "POST", "/connect/sessions", body=body)
    assert status == 403
    assert payload == {
        "error": {
            "code": "forbidden",
            "message": "You are not allowed to override the docs connect url",
        }
    }
    assert await sessions.count() == 0


async def test_missing_integrations_are_reported_before_the_forbidden_override(
    ready: Authgate,
) -> None:
    body = {"end_user": END_USER, "overrides": {"nope": {"docs_connect": "https://docs.x"}}}
    status, payload = await call(ready, "POST", "/connect/sessions", body=body)
    assert status == 400
    assert paths(payload) == [["overrides", "nope"]]


# --- transport and authentication of the create routes ------------------------------------


@pytest.mark.parametrize("path", ["/connect/sessions", "/connect/sessions/reconnect"])
async def test_create_routes_take_no_query(authgate: Authgate, path: str) -> None:
    status, payload = await call(authgate, "POST", path + "?env=dev", body={"end_user": END_USER})
    assert status == 400
    assert payload["error"]["code"] == "invalid_query_params"


@pytest.mark.parametrize("path", ["/connect/sessions", "/connect/sessions/reconnect"])
async def test_create_routes_need_a_secret_key(ready: Authgate, path: str) -> None:
    token = await create(ready, {"end_user": END_USER})
    body = {"end_user": END_USER, "connection_id": "conn-1", "integration_id": "keyed"}
    if path == "/connect/sessions":
        body = {"end_user": END_USER}
    # A session token cannot mint sessions: it is judged as a secret key here, and fails.
    status, payload = await call(ready, "POST", path, body=body, bearer=token)
    assert_auth_error(
        status,
        payload,
        "invalid_secret_key_format",
        "Authentication failed. The provided secret key is not a UUID v4.",
    )
    status, payload = await call(
        ready, "POST", path, body=body, bearer="0b6a3b4e-9b1c-4f7e-8a2d-3c4b5a6d7e8f"
    )
    assert status == 401
    assert payload["error"]["code"] == "unknown_account"


async def test_trailing_slash_is_routed(authgate: Authgate) -> None:
    token = await create(authgate, {"end_user": END_USER}, path="/connect/sessions/")
    status, _ = await call(authgate, "GET", "/connect/session/", bearer=token)
    assert status == 200


async def test_malformed_json_and_wrong_content_type(authgate: Authgate) -> None:
    status, payload = await call(
        authgate,
        "POST",
        "/connect/sessions",
        raw=b'{"end_user": ',
        headers={"Content-Type": "application/json"},
    )
    assert (status, payload["error"]["code"]) == (400, "invalid_json")
    status, payload = await call(
        authgate,
        "POST",
        "/connect/sessions",
        raw=b'{"end_user": {"id": "u"}}',
        headers={"Content-Type": "text/plain"},
    )
    assert (status, payload["error"]["code"]) == (415, "invalid_content_type")


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


JUNK: list[Any] = [
    None,
    [],
    "end_user",
    0,
    1.5,
    True,
    {"end_user": None},
    {"end_user": []},
    {"end_user": {"id": None}},
    {"end_user": {"id": 1e308}},
    {"end_user": {"id": "u\u0000"}},
    {"end_user": END_USER, "tags": {"a": None}},
    {"end_user": END_USER, "tags": {"\u0000": "v"}},
    {"end_user": END_USER, "allowed_integrations": [None, [], {}]},
    {"end_user": END_USER, "allowed_integrations": ["x"] * 10_000},
    {"end_user": END_USER, "integrations_config_defaults": {"github": None}},
    {
        "end_user": END_USER,
        "integrations_config_defaults": {"github": {"connection_config": _deep(300)}},
    },
    {"end_user": END_USER, "overrides": {"": {}}},
    {"end_user": END_USER, "webhook_url_override": "http://[::1"},
    {"end_user": END_USER, "webhook_url_override": "http://x:99999/"},
    {"end_user": END_USER, "webhook_url_override": "h" * 100_000},
    {"connection_id": None, "integration_id": None},
    {"connection_id": "c" * 256, "integration_id": "k" * 256},
    {"connection_id": "conn\n1", "integration_id": "keyed"},
    {"connection_id": "conn-1", "integration_id": "keyed", "allowed_integrations": ["keyed"]},
]
RAW_JUNK = [b"{", b"\xff\xfe", b"[" * 100_000, b'"' + b"s" * 1_000_000 + b'"', b"1e400", b"NaN"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/connect/sessions"),
        ("POST", "/connect/sessions/reconnect"),
        ("GET", "/connect/session"),
        ("DELETE", "/connect/session"),
    ],
)
async def test_junk_is_a_4xx_json_answer_never_a_500(
    ready: Authgate, sessions: Sessions, method: str, path: str
) -> None:
    bearer = await create(ready, {"tags": {}}) if method != "POST" else None
    # JSON `null` is no body at all, which the body-less routes rightly accept.
    for body in JUNK if bearer is None else [junk for junk in JUNK if junk is not None]:
        status, payload = await call(ready, method, path, body=body, bearer=bearer)
        # A junk body that happens to be valid enough still only ever gets a 4xx or 201.
        assert status == 201 or 400 <= status < 500, (body, status, payload)
    for raw in RAW_JUNK:
        status, payload = await call(
            ready,
            method,
            path,
            raw=raw,
            bearer=bearer,
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= status < 500, (raw[:20], status, payload)
        assert isinstance(payload["error"]["code"], str)
    if bearer is not None:
        # The junk did not end the session.
        assert (await session_of(ready, bearer))["endUser"] is None


# --- POST /connect/sessions/reconnect -------------------------------------------------------


async def test_reconnect_session_is_bound_to_its_connection(
    ready: Authgate, sessions: Sessions
) -> None:
    status, payload = await call(
        ready,
        "POST",
        "/connect/sessions/reconnect",
        body={"connection_id": "conn-1", "integration_id": "keyed"},
    )
    assert status == 201
    data = payload["data"]
    assert set(data) == {"token", "connect_link", "expires_at"}
    assert TOKEN.fullmatch(data["token"])
    assert ISO_MS_Z.fullmatch(data["expires_at"])
    stored = await sessions.stored(data["token"])
    assert stored.spec.reconnect == ReconnectTarget("keyed", "conn-1")
    assert stored.spec.allowed_integrations == ("keyed",)
    assert stored.spec.tags == {}
    view = await session_of(ready, data["token"])
    assert view == {
        # The connection's end user, read from the connection.
        "endUser": {
            "id": "owner-9",
            "display_name": "Owner",
            "email": "owner@example.com",
            "tags": None,
            "organization": None,
        },
        "connectUISettings": DEFAULT_UI,
        "allowed_integrations": ["keyed"],
        "isReconnecting": True,
    }
    # The Connect UI sees only the reconnected integration.
    status, listed = await call(ready, "GET", "/integrations", bearer=data["token"])
    assert status == 200
    assert [item["unique_key"] for item in listed["data"]] == ["keyed"]


async def test_reconnect_takes_the_optional_fields(ready: Authgate, sessions: Sessions) -> None:
    await ready.connection("github", "conn-2", {"type": "OAUTH2", "access_token": "t"})
    token = await create(
        ready,
        {
            "connection_id": "conn-2",
            "integration_id": "github",
            "end_user": {"id": "u-2"},
            "organization": {"id": "org"},
            "tags": {"team": "a"},
            "integrations_config_defaults": {
                "github": {"connection_config": {"webhook_url": "https://h.example.com/x"}}
            },
            "overrides": {"github": {}},
        },
        path="/connect/sessions/reconnect",
    )
    stored = await sessions.stored(token)
    assert stored.spec.tags == {"end_user_id": "u-2", "organization_id": "org", "team": "a"}
    assert stored.spec.webhook_url_override == "https://h.example.com/x"
    view = await session_of(ready, token)
    # conn-2 has no end user of its own, so the session's is shown.
    assert view["endUser"] == {
        "id": "u-2",
        "display_name": None,
        "email": None,
        "tags": None,
        "organization": {"id": "org", "display_name": None},
    }
    assert view["integrations_config_defaults"] == {"github": {}}
    assert view["overrides"] == {"github": {}}
    assert view["isReconnecting"] is True


@pytest.mark.parametrize(
    ("connection_id", "integration_id"),
    [("conn-404", "keyed"), ("conn-1", "github"), ("conn-1", "nope")],
)
async def test_reconnect_needs_an_existing_connection(
    ready: Authgate, sessions: Sessions, connection_id: str, integration_id: str
) -> None:
    body = {"connection_id": connection_id, "integration_id": integration_id}
    status, payload = await call(ready, "POST", "/connect/sessions/reconnect", body=body)
    assert status == 400
    assert payload == {
        "error": {
            "code": "invalid_body",
            "message": "ConnectionID or IntegrationId does not exists",
        }
    }
    assert await sessions.count() == 0


async def test_reconnect_checks_the_connection_before_the_integrations(ready: Authgate) -> None:
    body = {
        "connection_id": "conn-404",
        "integration_id": "keyed",
        "overrides": {"nope": {"docs_connect": "x"}},
    }
    status, payload = await call(ready, "POST", "/connect/sessions/reconnect", body=body)
    assert status == 400
    assert payload["error"]["message"] == "ConnectionID or IntegrationId does not exists"


async def test_reconnect_integrations_named_must_exist(ready: Authgate) -> None:
    body = {
        "connection_id": "conn-1",
        "integration_id": "keyed",
        "integrations_config_defaults": {"absent": {}},
        "overrides": {"missing": {}},
    }
    status, payload = await call(ready, "POST", "/connect/sessions/reconnect", body=body)
    assert status == 400
    assert paths(payload) == [["integrations_config_defaults", "absent"], ["overrides", "missing"]]
    assert {item["message"] for item in issues(payload)} == {"Integration does not exist"}


async def test_reconnect_refuses_a_docs_connect_override(ready: Authgate) -> None:
    body = {
        "connection_id": "conn-1",
        "integration_id": "keyed",
        "overrides": {"keyed": {"docs_connect": "https://docs.example.com"}},
    }
    status, payload = await call(ready, "POST", "/connect/sessions/reconnect", body=body)
    assert status == 403
    assert payload["error"] == {
        "code": "forbidden",
        "message": "You are not allowed to override the docs connect url",
    }


@pytest.mark.parametrize(
    ("body", "expected_paths"),
    [
        ({}, [["connection_id"], ["integration_id"]]),
        ({"connection_id": "conn-1"}, [["integration_id"]]),
        ({"connection_id": "conn-1", "integration_id": "bad/key"}, [["integration_id"]]),
        ({"connection_id": "conn\t1", "integration_id": "keyed"}, [["connection_id"]]),
        (
            {"connection_id": "conn-1", "integration_id": "keyed", "allowed_integrations": []},
            [[]],
        ),
        (
            {"connection_id": "conn-1", "integration_id": "keyed", "end_user": {"id": ""}},
            [["end_user", "id"]],
        ),
        (
            {"connection_id": "conn-1", "integration_id": "keyed", "webhook_url_override": "x"},
            [["webhook_url_override"]],
        ),
    ],
)
async def test_reconnect_body_rules(
    ready: Authgate, body: dict[str, Any], expected_paths: list[list[str]]
) -> None:
    status, payload = await call(ready, "POST", "/connect/sessions/reconnect", body=body)
    assert status == 400
    assert paths(payload) == expected_paths


async def test_reconnect_session_of_a_deleted_connection_has_no_end_user(
    ready: Authgate, sessions: Sessions
) -> None:
    token = await create(
        ready, {"connection_id": "conn-1", "integration_id": "keyed"}, "/connect/sessions/reconnect"
    )
    await sessions.db.execute("DELETE FROM connections WHERE connection_id = $1", "conn-1")
    status, payload = await call(ready, "GET", "/connect/session", bearer=token)
    assert status == 404
    assert payload == {"error": {"code": "not_found", "message": "End user not found"}}


# --- GET /connect/session ----------------------------------------------------------------


async def test_a_minimal_session_shows_only_the_required_fields(authgate: Authgate) -> None:
    token = await create(authgate, {"end_user": {"id": "u-1"}})
    assert await session_of(authgate, token) == {
        "endUser": {
            "id": "u-1",
            "display_name": None,
            "email": None,
            "tags": None,
            "organization": None,
        },
        "connectUISettings": DEFAULT_UI,
    }


async def test_a_session_with_neither_end_user_nor_tags_is_refused(
    authgate: Authgate, sessions: Sessions
) -> None:
    # Unreachable through POST (it requires one or the other); a guard for older rows.
    token = await sessions.issue(SessionSpec())
    status, payload = await call(authgate, "GET", "/connect/session", bearer=token)
    assert status == 400
    assert payload == {
        "error": {
            "code": "invalid_body",
            "message": "end_user is required unless tags are provided",
        }
    }


async def test_session_routes_take_no_query(authgate: Authgate) -> None:
    token = await create(authgate, {"tags": {}})
    for method in ("GET", "DELETE"):
        status, payload = await call(authgate, method, "/connect/session?x=1", bearer=token)
        assert status == 400
        assert payload["error"]["code"] == "invalid_query_params"
    assert (await session_of(authgate, token))["endUser"] is None


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_session_routes_take_no_body(authgate: Authgate, method: str) -> None:
    token = await create(authgate, {"tags": {}})
    status, payload = await call(authgate, method, "/connect/session", body={"a": 1}, bearer=token)
    assert status == 400
    assert issues(payload) == [
        {"code": "unrecognized_keys", "message": 'Unrecognized key: "a"', "path": []}
    ]
    status, payload = await call(authgate, method, "/connect/session", body=[1], bearer=token)
    assert status == 400
    # An empty object says nothing, and is accepted like no body.
    status, _ = await call(authgate, method, "/connect/session", body={}, bearer=token)
    assert status == (200 if method == "GET" else 204)


# --- DELETE /connect/session ---------------------------------------------------------------


async def test_delete_ends_the_session_at_once(ready: Authgate, sessions: Sessions) -> None:
    token = await create(ready, {"end_user": END_USER})
    other = await create(ready, {"end_user": END_USER})
    status, payload = await call(ready, "DELETE", "/connect/session", bearer=token)
    assert (status, payload) == (204, None)
    for method, path in (
        ("GET", "/connect/session"),
        ("DELETE", "/connect/session"),
        ("GET", "/providers"),
        ("GET", "/providers/fake-basic"),
        ("GET", "/integrations"),
    ):
        status, payload = await call(ready, method, path, bearer=token)
        assert_auth_error(status, payload, "unknown_connect_session_token", UNKNOWN)
    # Only that session ended.
    assert await sessions.count() == 1
    assert (await session_of(ready, other))["endUser"]["id"] == "user-1"


async def test_delete_of_a_session_ended_meanwhile_is_nangos_400(authgate: Authgate) -> None:
    """Authentication passed, then the session vanished (a concurrent DELETE): the handler
    answers Nango's 400 `server_error` with a payload."""
    request = make_mocked_request("DELETE", "/connect/session", app=authgate.app)
    environment = Environment(1, "dev")
    request[ENVIRONMENT] = environment
    request[CONNECT_SESSION] = ConnectSessionPrincipal(environment, 987_654)
    with pytest.raises(ApiError) as raised:
        await delete_session(request)
    error = raised.value
    assert (error.status, error.code) == (400, "server_error")
    assert error.body() == {
        "error": {
            "code": "server_error",
            "message": "Failed to delete connect session",
            "payload": {"id": 987_654, "environment": "dev"},
        }
    }


# --- the token as a credential (§2.1, §2.3) -----------------------------------------------


MALFORMED_TOKENS = [
    "nango_connect_session_",
    "nango_connect_session_xyz",
    "nango_connect_session_" + "A" * 64,
    "nango_connect_session_" + "a" * 63,
    "nango_connect_session_" + "a" * 65,
    "nango_connect_session_" + "a" * 64 + "-",
]


@pytest.mark.parametrize("token", MALFORMED_TOKENS)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/connect/session"),
        ("DELETE", "/connect/session"),
        ("GET", "/providers"),
        ("GET", "/providers/fake-basic"),
        ("GET", "/integrations"),
    ],
)
async def test_a_malformed_token_gets_the_format_error(
    authgate: Authgate, token: str, method: str, path: str
) -> None:
    status, payload = await call(authgate, method, path, bearer=token)
    assert_auth_error(status, payload, "invalid_connect_session_token_format", MALFORMED)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/connect/session"),
        ("DELETE", "/connect/session"),
        ("GET", "/providers"),
        ("GET", "/providers/fake-basic"),
        ("GET", "/integrations"),
    ],
)
async def test_an_unknown_token_gets_the_unknown_error(
    authgate: Authgate, method: str, path: str
) -> None:
    status, payload = await call(authgate, method, path, bearer=NEVER_ISSUED)
    assert_auth_error(status, payload, "unknown_connect_session_token", UNKNOWN)


async def test_an_expired_token_is_refused_and_purged(
    authgate: Authgate, sessions: Sessions
) -> None:
    expired = await sessions.issue(SessionSpec(tags={}), age_ms=SESSION_TTL_MS + 1_000)
    alive = await sessions.issue(SessionSpec(tags={}), age_ms=SESSION_TTL_MS - 60_000)
    assert await sessions.count() == 2
    for path in ("/connect/session", "/providers", "/integrations"):
        status, payload = await call(authgate, "GET", path, bearer=expired)
        assert_auth_error(status, payload, "unknown_connect_session_token", UNKNOWN)
    assert await sessions.count() == 1
    assert (await session_of(authgate, alive))["endUser"] is None


async def test_session_only_routes_refuse_a_secret_key(authgate: Authgate) -> None:
    for method in ("GET", "DELETE"):
        status, payload = await call(authgate, method, "/connect/session")
        assert_auth_error(status, payload, "invalid_connect_session_token_format", MALFORMED)


async def test_session_only_routes_need_a_token(authgate: Authgate) -> None:
    url = str(authgate.url).rstrip("/") + "/connect/session"
    async with authgate.session.get(url) as response:
        assert response.status == 401
        payload = await json_of(response)
    assert payload["error"]["payload"] == {}


async def test_providers_and_integrations_accept_a_token(ready: Authgate) -> None:
    token = await create(ready, {"end_user": END_USER, "allowed_integrations": ["github"]})
    for path in ("/providers", "/providers/fake-basic", "/integrations"):
        by_token = await call(ready, "GET", path, bearer=token)
        assert by_token[0] == 200, (path, by_token)
    status, payload = await call(ready, "GET", "/integrations", bearer=token)
    assert [item["unique_key"] for item in payload["data"]] == ["github"]
    status, payload = await call(ready, "GET", "/providers/fake-basic", bearer=token)
    assert payload["data"]["name"] == "fake-basic"
    # The secret key keeps working on the same routes, unfiltered.
    status, payload = await call(ready, "GET", "/integrations")
    assert status == 200
    assert {item["unique_key"] for item in payload["data"]} == {"github", "keyed"}


async def test_a_token_opens_only_the_routes_marked_for_it(ready: Authgate) -> None:
    token = await create(ready, {"end_user": END_USER})
    for method, path, body in (
        ("GET", "/integrations/github", _UNSET),
        ("POST", "/integrations", {"provider": "fake-basic", "unique_key": "x"}),
        ("POST", "/connect/sessions", {"end_user": END_USER}),
    ):
        status, payload = await call(ready, method, path, body=body, bearer=token)
        assert_auth_error(
            status,
            payload,
            "invalid_secret_key_format",
            "Authentication failed. The provided secret key is not a UUID v4.",
        )


async def test_the_last_bearer_counts_like_for_secret_keys(ready: Authgate) -> None:
    token = await create(ready, {"end_user": END_USER})
    headers = {"Authorization": f"Bearer junk Bearer {token}"}
    url = str(ready.url).rstrip("/") + "/connect/session"
    async with ready.session.get(url, headers=headers) as response:
        assert response.status == 200


# --- environments ---------------------------------------------------------------------------


async def test_a_session_sees_only_its_own_environment(
    ready: Authgate, sessions: Sessions, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await create_environment(CoreSettings.from_env(ready.environ), "prod") == 0
    prod_key = capsys.readouterr().out.strip()
    response = await ready.post_json(
        "/integrations", {"provider": "fake-basic", "unique_key": "prod-only"}, key=prod_key
    )
    assert response.status == 200
    dev_token = await create(ready, {"end_user": END_USER})
    status, payload = await call(ready, "GET", "/integrations", bearer=dev_token)
    assert {item["unique_key"] for item in payload["data"]} == {"github", "keyed"}
    # Dev cannot name prod's integration or reconnect prod's connections, and vice versa.
    status, payload = await call(
        ready,
        "POST",
        "/connect/sessions",
        body={"end_user": END_USER, "allowed_integrations": ["prod-only"]},
    )
    assert paths(payload) == [["allowed_integrations", "0"]]
    status, payload = await call(
        ready,
        "POST",
        "/connect/sessions/reconnect",
        body={"connection_id": "conn-1", "integration_id": "keyed"},
        bearer=prod_key,
    )
    assert payload["error"]["message"] == "ConnectionID or IntegrationId does not exists"
    prod_token = await create_with_key(ready, prod_key, {"tags": {"side": "prod"}})
    status, payload = await call(ready, "GET", "/integrations", bearer=prod_token)
    assert status == 200
    assert [item["unique_key"] for item in payload["data"]] == ["prod-only"]
    prod = await sessions.environment("prod")
    resolved = await sessions.store.resolve(prod_token)
    assert resolved is not None
    assert resolved.environment == prod


async def create_with_key(authgate: Authgate, key: str, body: Any) -> str:
    status, payload = await call(authgate, "POST", "/connect/sessions", body=body, bearer=key)
    assert status == 201, payload
    token: str = payload["data"]["token"]
    return token


async def test_only_the_token_hash_reaches_the_database(
    authgate: Authgate, sessions: Sessions
) -> None:
    token = await create(authgate, {"end_user": END_USER})
    rows = await sessions.db.fetch("SELECT * FROM connect_sessions")
    assert len(rows) == 1
    assert bytes(rows[0]["token_hash"]) == hash_token(token)
    dumped = orjson.dumps({k: v for k, v in rows[0].items() if k != "token_hash"}).decode()
    assert token.removeprefix("nango_connect_session_") not in dumped


# --- logs ----------------------------------------------------------------------------------


async def test_tokens_never_reach_the_logs(
    make_authgate: Factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Production never runs aiohttp's access log; the test server would, so mirror it.
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    caplog.set_level(logging.DEBUG)
    authgate = await make_authgate()
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("keyed", "conn-1", {"type": "API_KEY", "apiKey": "ak"})
    tokens = [
        await create(authgate, {"end_user": END_USER, "allowed_integrations": ["keyed"]}),
        await create(
            authgate,
            {"connection_id": "conn-1", "integration_id": "keyed"},
            "/connect/sessions/reconnect",
        ),
    ]
    for token in tokens:
        for path in ("/connect/session", "/providers", "/integrations", "/integrations/keyed"):
            await call(authgate, "GET", path, bearer=token)
        await call(authgate, "GET", "/connect/session?x=1", bearer=token)
        await call(authgate, "GET", "/connect/session", body={"a": 1}, bearer=token)
        await call(authgate, "DELETE", "/connect/session", bearer=token)
        await call(authgate, "GET", "/connect/session", bearer=token)  # now unknown
        await call(authgate, "GET", "/providers", bearer=token[:-1])  # malformed
    assert caplog.records, "nothing was captured: the capture is broken"
    secrets = [token.removeprefix("nango_connect_session_") for token in tokens]
    plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
    structured = JsonFormatter()
    for record in caplog.records:
        renderings = [structured.format(record), plain.format(record), repr(record.__dict__)]
        for text in renderings:
            for secret in secrets:
                assert secret[:32] not in text, text
                assert secret[32:] not in text, text
