"""The activity log end to end: proxied calls through a running `authgate serve`, read
back through `GET /connections/{connection_id}/activity`, on SQLite and PostgreSQL.

Entries are written asynchronously; each test waits on the app's writer (`flush()`),
never on time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from authgate.serving import build_management_app, start_proxy, start_serve
from credentials.activity import ActivityLog
from credentials.config import ConfigError
from credentials.secret_keys import generate_secret_key, hash_secret_key
from management.request_context import CORE
from management.settings import ManagementSettings
from proxy.compat import REQUEST_ID_HEADER
from proxy.settings import ProxySettings
from tests.e2e.conftest import Authgate, Factory, json_of, ok_handler, settings_env
from tests.e2e.fake_provider import FakeProvider
from tests.log_scan import SecretRegistry

API_KEY = "ak-ACTIVITY-5e1d2c3b"
QUERY_SECRET = "qs-ACTIVITY-9a8b7c6d"


async def prepared(authgate: Authgate) -> Authgate:
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("keyed", "conn-a", {"type": "API_KEY", "apiKey": API_KEY})
    await authgate.connection("keyed", "conn-b", {"type": "API_KEY", "apiKey": API_KEY})
    return authgate


@pytest.fixture
async def gate(authgate: Authgate) -> Authgate:
    return await prepared(authgate)


def writer(authgate: Authgate) -> ActivityLog:
    activity = authgate.plane.activity
    assert activity is not None
    return activity


async def call(
    authgate: Authgate,
    target: str = "/proxy/items",
    *,
    connection_id: str = "conn-a",
    log_id: str | None = None,
    method: str = "GET",
) -> str:
    """One proxied call; returns its request id."""
    headers = {"Nango-Activity-Log-Id": log_id} if log_id is not None else {}
    response = await authgate.proxy(
        method, target, connection_id=connection_id, provider_config_key="keyed", headers=headers
    )
    await response.read()
    return response.headers[REQUEST_ID_HEADER]


async def activity(
    authgate: Authgate,
    connection_id: str = "conn-a",
    *,
    key: str | None = None,
    **query: str,
) -> tuple[int, Any]:
    params = {"provider_config_key": "keyed", **query}
    url = authgate.url.with_path(f"/connections/{connection_id}/activity").with_query(params)
    response = await authgate.session.get(url, headers=authgate.auth(key))
    return response.status, await json_of(response)


async def listed(authgate: Authgate, **query: str) -> list[dict[str, Any]]:
    await writer(authgate).flush()
    status, body = await activity(authgate, **query)
    assert status == 200, body
    entries: list[dict[str, Any]] = body["activities"]
    return entries


async def test_every_proxied_call_is_recorded_with_its_outcome(gate: Authgate) -> None:
    gate.provider.respond("/api/broken", ok_handler(status=503))
    first = await call(gate, f"/proxy/items?token={QUERY_SECRET}&page=2", log_id="op-1")
    second = await call(gate, "/proxy/broken", log_id="op-1", method="POST")
    third = await call(gate, "/proxy/other")
    await call(gate, "/proxy/items", connection_id="conn-b")

    entries = await listed(gate)
    assert [entry["request_id"] for entry in entries] == [third, second, first]
    newest, failed, oldest = entries
    assert oldest["activity_log_id"] == "op-1"
    assert (oldest["method"], oldest["path"], oldest["status"]) == ("GET", "/proxy/items", 200)
    assert oldest["host"] == f"127.0.0.1:{gate.provider_port}"
    assert oldest["error_code"] is None
    assert oldest["retries"] == 0
    assert oldest["upstream_ms"] > 0
    assert oldest["overhead_ms"] >= 0
    assert oldest["created_at"].endswith("Z")
    assert (failed["method"], failed["status"]) == ("POST", 503)
    assert newest["activity_log_id"] is None
    # Nothing of the query, the credentials or the headers is stored.
    assert QUERY_SECRET not in str(entries)
    assert API_KEY not in str(entries)
    assert writer(gate).written == 4


async def test_one_group_is_one_activity_log_id_filter(gate: Authgate) -> None:
    grouped = [await call(gate, log_id="op-42") for _ in range(3)]
    await call(gate, log_id="op-43")
    await call(gate)
    entries = await listed(gate, activity_log_id="op-42")
    assert [entry["request_id"] for entry in entries] == grouped[::-1]
    assert {entry["activity_log_id"] for entry in entries} == {"op-42"}


async def test_calls_authgate_refused_are_recorded_with_their_error_code(gate: Authgate) -> None:
    unknown = await call(gate, connection_id="nobody")
    entries = await listed_for(gate, "nobody")
    assert [(e["request_id"], e["status"], e["error_code"]) for e in entries] == [
        (unknown, 404, "unknown_connection")
    ]
    assert entries[0]["host"] is None


async def listed_for(authgate: Authgate, connection_id: str) -> list[dict[str, Any]]:
    await writer(authgate).flush()
    status, body = await activity(authgate, connection_id)
    assert status == 200, body
    entries: list[dict[str, Any]] = body["activities"]
    return entries


async def test_calls_without_an_environment_or_a_connection_are_not_recorded(
    gate: Authgate,
) -> None:
    refused = await gate.proxy("GET", "/proxy/x", key=generate_secret_key())
    assert refused.status == 401, await refused.text()
    invalid = await gate.proxy("GET", "/proxy/x", connection_id="conn-a", headers={"Retries": "99"})
    assert invalid.status == 400, await invalid.text()
    await call(gate)  # a recorded one, so the flush below covers the two above
    assert len(await listed(gate)) == 1
    assert writer(gate).accepted == 1


async def test_status_and_since_filters(gate: Authgate) -> None:
    gate.provider.respond("/api/limited", ok_handler(status=429))
    gate.provider.respond("/api/gone", ok_handler(status=404))
    ok = await call(gate)
    limited = await call(gate, "/proxy/limited")
    gone = await call(gate, "/proxy/gone")
    assert [e["request_id"] for e in await listed(gate, status="429")] == [limited]
    assert [e["request_id"] for e in await listed(gate, status="4xx")] == [gone, limited]
    assert [e["request_id"] for e in await listed(gate, status="2xx")] == [ok]
    assert len(await listed(gate, since="2000-01-01T00:00:00Z")) == 3
    assert len(await listed(gate, since="2000-01-01t00:00:00.5z")) == 3  # RFC 3339 spelling
    assert await listed(gate, since="2999-01-01T00:00:00+02:00") == []


async def test_pages_follow_the_cursor_to_the_end(gate: Authgate) -> None:
    made = [await call(gate) for _ in range(5)]
    await writer(gate).flush()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "2"} if cursor is None else {"limit": "2", "cursor": cursor}
        status, body = await activity(gate, **query)
        assert status == 200, body
        assert len(body["activities"]) <= 2
        seen.extend(entry["request_id"] for entry in body["activities"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (made[::-1], 3)


async def test_another_environment_sees_nothing(
    gate: Authgate, secret_registry: SecretRegistry
) -> None:
    await call(gate)
    await writer(gate).flush()
    core = gate.app[CORE]
    environment = await core.store.create_environment("elsewhere")
    other_key = generate_secret_key()
    secret_registry.add(other_key, "the other environment's secret key")
    await core.store.add_secret_key(environment.id, hash_secret_key(other_key), "test")
    status, body = await activity(gate, key=other_key)
    assert (status, body) == (200, {"activities": [], "next_cursor": None})
    status, body = await activity(gate)
    assert status == 200
    assert len(body["activities"]) == 1


async def test_the_endpoint_needs_the_secret_key(gate: Authgate) -> None:
    url = gate.url.with_path("/connections/conn-a/activity").with_query(
        {"provider_config_key": "keyed"}
    )
    response = await gate.session.get(url)
    assert response.status == 401
    response = await gate.session.get(url, headers=gate.auth(generate_secret_key()))
    assert response.status == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"provider_config_key": "keyed", "page": "2"}, None),
        ({}, "provider_config_key"),
        ({"provider_config_key": "keyed", "status": "600"}, "status"),
        ({"provider_config_key": "keyed", "status": "4x"}, "status"),
        ({"provider_config_key": "keyed", "since": "yesterday"}, "since"),
        ({"provider_config_key": "keyed", "since": "2026-01-01T00:00:00"}, "since"),
        ({"provider_config_key": "keyed", "limit": "0"}, "limit"),
        ({"provider_config_key": "keyed", "limit": "501"}, "limit"),
        ({"provider_config_key": "keyed", "limit": "ten"}, "limit"),
        ({"provider_config_key": "keyed", "cursor": "abc"}, "cursor"),
        ({"provider_config_key": "keyed", "cursor": "0"}, "cursor"),
        ({"provider_config_key": "keyed", "cursor": "9999999999999999999"}, "cursor"),
        ({"provider_config_key": "keyed", "activity_log_id": ""}, "activity_log_id"),
        ({"provider_config_key": "keyed", "activity_log_id": "x" * 256}, "activity_log_id"),
    ],
    ids=[
        "unknown key",
        "no provider_config_key",
        "status 600",
        "status 4x",
        "since a word",
        "since without a zone",
        "limit 0",
        "limit 501",
        "limit a word",
        "cursor a word",
        "cursor 0",
        "cursor past int64",
        "empty activity_log_id",
        "long activity_log_id",
    ],
)
async def test_invalid_queries_are_400s_naming_the_field(
    gate: Authgate, query: dict[str, str], field: str | None
) -> None:
    url = gate.url.with_path("/connections/conn-a/activity").with_query(query)
    response = await gate.session.get(url, headers=gate.auth())
    body = await json_of(response)
    assert response.status == 400, body
    assert body["error"]["code"] == "invalid_query_params"
    paths = [issue["path"] for issue in body["error"]["errors"]]
    if field is None:  # an unknown key
        assert body["error"]["errors"][0]["code"] == "unrecognized_keys", body
    else:
        assert [field] in paths, body


async def test_a_trailing_slash_is_the_same_route(gate: Authgate) -> None:
    await call(gate)
    await writer(gate).flush()
    url = gate.url.with_path("/connections/conn-a/activity/").with_query(
        {"provider_config_key": "keyed"}
    )
    response = await gate.session.get(url, headers=gate.auth())
    assert response.status == 200
    assert len((await json_of(response))["activities"]) == 1


async def test_disabled_activity_log_records_nothing(
    make_authgate: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHGATE_ACTIVITY_LOG", "false")
    gate = await prepared(await make_authgate())
    assert gate.plane.activity is None
    await call(gate)
    status, body = await activity(gate)
    assert (status, body["activities"]) == (200, [])


async def test_an_invalid_setting_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHGATE_ACTIVITY_RETENTION_DAYS", "0")
    environ = settings_env(tmp_path, f"sqlite:///{tmp_path / 'bad.db'}")
    with pytest.raises(ConfigError) as problem:
        await start_serve(
            ProxySettings.from_env(environ), ManagementSettings.from_env(environ), port=0
        )
    assert problem.value.variable == "AUTHGATE_ACTIVITY_RETENTION_DAYS"


async def test_shutdown_writes_what_is_queued(tmp_path: Path, database_url: str) -> None:
    """Stopping the server flushes the writer before the store closes: an entry queued
    by the last request is in the table for the next process to read."""
    environ = settings_env(tmp_path, database_url)
    first = await _serve(environ)
    gate = await prepared(first.authgate)
    request_id = await call(gate)
    recorder = writer(gate)
    await first.close()
    assert (recorder.accepted, recorder.written) == (1, 1)
    second = await _serve(environ)
    try:
        status, body = await activity(second.authgate)
    finally:
        await second.close()
    assert status == 200, body
    assert [entry["request_id"] for entry in body["activities"]] == [request_id]


@dataclass
class _Served:
    authgate: Authgate
    provider: TestServer

    async def close(self) -> None:
        await self.authgate.session.close()
        await self.authgate.running.close()
        await self.provider.close()


async def _serve(environ: dict[str, str]) -> _Served:
    provider = FakeProvider()
    provider_server = TestServer(provider.app, host="127.0.0.1")
    await provider_server.start_server()
    running = await start_serve(
        ProxySettings.from_env(environ), ManagementSettings.from_env(environ), port=0
    )
    assert provider_server.port is not None
    gate = Authgate(
        url=URL(f"http://127.0.0.1:{running.port}/"),
        secret_key=environ["AUTHGATE_SECRET_KEY"],
        session=aiohttp.ClientSession(),
        provider=provider,
        provider_port=provider_server.port,
        data_dir=Path(environ["AUTHGATE_DATA_DIR"]),
        environ=environ,
        running=running,
    )
    return _Served(gate, provider_server)


async def test_only_processes_that_proxy_run_a_writer(tmp_path: Path) -> None:
    environ = settings_env(tmp_path, f"sqlite:///{tmp_path / 'roles.db'}")
    proxy = await start_proxy(ProxySettings.from_env(environ), port=0)
    management_app = await build_management_app(ManagementSettings.from_env(environ))
    try:
        assert proxy.plane is not None
        assert isinstance(proxy.plane.activity, ActivityLog)
        assert not any(isinstance(value, ActivityLog) for value in management_app.values())
    finally:
        await proxy.close()
        runner = web.AppRunner(management_app)  # setup and cleanup run its whole lifetime
        await runner.setup()
        await runner.cleanup()
