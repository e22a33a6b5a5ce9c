"""Connection metadata through the management API, end to end (§7.7 to 7.9): `POST`
replaces, `PATCH` shallow-merges, one id or many, all or nothing; the `/connection/...`
aliases and the deprecated per-id routes; on SQLite and PostgreSQL.

A provider whose proxy header is `${metadata.region}` makes the proxy the witness that a
metadata write is used on the very next proxied call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.e2e.conftest import TEST_PROVIDERS, Authgate, Factory, json_of
from tests.e2e.management_calls import call as shared_call

REGIONAL_PROVIDER = """
fake-regional:
    display_name: Fake regional API key
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
        headers:
            x-api-key: ${apiKey}
            x-region: ${metadata.region}
"""
NODE_HEADERS = {
    "User-Agent": "nango-node-client/0.71.10 (linux/6.8.0; node.js/v22.11.0)",
    "Nango-Is-Sync": "false",
    "Nango-Is-Script": "false",
    "Nango-Is-Dry-Run": "false",
}
BULK_SUFFIX = ". No actions were taken on any of the connections as a result of this failure."


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture
async def authgate(make_authgate: Factory, tmp_path: Path) -> Authgate:
    """authgate with integration `reg` (fake-regional) and connections c1, c2, c3 whose
    metadata is `{"region": "eu", "n": <i>}`."""
    providers = tmp_path / "regional-providers.yaml"
    providers.write_text(TEST_PROVIDERS + REGIONAL_PROVIDER)
    instance = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    await instance.integration("reg", "fake-regional")
    for index in (1, 2, 3):
        await instance.connection(
            "reg",
            f"c{index}",
            {"type": "API_KEY", "apiKey": f"key-{index}"},
            metadata={"region": "eu", "n": index},
        )
    return instance


async def call(authgate: Authgate, method: str, target: str, **options: Any) -> tuple[int, Any]:
    """`management_calls.call` with the headers @nangohq/node adds to every request."""
    headers = {**NODE_HEADERS, **(options.pop("headers", None) or {})}
    return await shared_call(authgate, method, target, headers=headers, **options)


async def metadata_of(authgate: Authgate, connection_id: str, key: str = "reg") -> Any:
    """What getMetadata() returns: `.metadata` of GET /connections/{id} with both flags off."""
    target = (
        f"/connections/{connection_id}?provider_config_key={key}&force_refresh=false"
        "&refresh_token=false&refresh_github_app_jwt_token=false"
    )
    status, payload = await call(
        authgate, "GET", target, headers={"Content-Type": "application/json"}
    )
    assert status == 200, payload
    return payload["metadata"]


async def all_metadata(authgate: Authgate) -> dict[str, Any]:
    return {name: await metadata_of(authgate, name) for name in ("c1", "c2", "c3")}


ORIGINAL = {
    "c1": {"region": "eu", "n": 1},
    "c2": {"region": "eu", "n": 2},
    "c3": {"region": "eu", "n": 3},
}


async def region_sent(authgate: Authgate, connection_id: str) -> str | None:
    """The x-region header the proxy sends for the connection right now."""
    response = await authgate.proxy(
        "GET", "/proxy/where", connection_id=connection_id, provider_config_key="reg"
    )
    assert response.status == 200, await response.text()
    return authgate.provider.last().header("x-region")


def not_found_message(connection_id: str, key: str = "reg") -> str:
    return (
        f"Connection with connection id {connection_id} and provider config key {key} not found."
        " Please make sure the connection exists in the Nango dashboard"
    )


def assert_issue(status: int, payload: Any, code: str, path: list[str], issue_code: str) -> None:
    assert status == 400, payload
    assert payload["error"]["code"] == code, payload
    matching = [issue for issue in payload["error"]["errors"] if issue["path"] == path]
    assert matching, payload
    assert issue_code in {issue["code"] for issue in matching}, payload


# --- POST / PATCH /connections/metadata ----------------------------------------------------


@pytest.mark.parametrize("path", ["/connections/metadata", "/connection/metadata"])
async def test_post_replaces_and_echoes_with_201(authgate: Authgate, path: str) -> None:
    assert await region_sent(authgate, "c1") == "eu"  # warms the proxy's cache
    body = {"connection_id": "c1", "provider_config_key": "reg", "metadata": {"region": "us"}}
    status, payload = await call(authgate, "POST", path, body=body)
    assert (status, payload) == (201, body)
    assert await metadata_of(authgate, "c1") == {"region": "us"}  # "n" is gone
    assert await region_sent(authgate, "c1") == "us"
    assert await metadata_of(authgate, "c2") == ORIGINAL["c2"]


@pytest.mark.parametrize("path", ["/connections/metadata", "/connection/metadata"])
async def test_patch_merges_shallowly_and_echoes_with_200(authgate: Authgate, path: str) -> None:
    assert await region_sent(authgate, "c1") == "eu"
    await call(
        authgate,
        "POST",
        path,
        body={
            "connection_id": "c1",
            "provider_config_key": "reg",
            "metadata": {"region": "eu", "nested": {"a": 1, "b": 2}, "keep": True},
        },
    )
    body = {
        "connection_id": "c1",
        "provider_config_key": "reg",
        "metadata": {"region": "ap", "nested": {"c": 3}, "extra": None},
    }
    status, payload = await call(authgate, "PATCH", path, body=body)
    assert (status, payload) == (200, body)
    assert await metadata_of(authgate, "c1") == {
        "region": "ap",
        "nested": {"c": 3},  # replaced, not merged: the merge is one level deep
        "keep": True,
        "extra": None,
    }
    assert await region_sent(authgate, "c1") == "ap"


@pytest.mark.parametrize(("method", "status"), [("POST", 201), ("PATCH", 200)])
async def test_many_connections_at_once(authgate: Authgate, method: str, status: int) -> None:
    body = {"connection_id": ["c1", "c3"], "provider_config_key": "reg", "metadata": {"x": 1}}
    answer, payload = await call(authgate, method, "/connections/metadata", body=body)
    assert (answer, payload) == (status, body)
    merged = method == "PATCH"
    assert await all_metadata(authgate) == {
        "c1": {**ORIGINAL["c1"], "x": 1} if merged else {"x": 1},
        "c2": ORIGINAL["c2"],
        "c3": {**ORIGINAL["c3"], "x": 1} if merged else {"x": 1},
    }


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_one_missing_connection_changes_nothing(authgate: Authgate, method: str) -> None:
    assert await region_sent(authgate, "c1") == "eu"
    body = {
        "connection_id": ["c1", "c2", "ghost", "c3", "phantom"],
        "provider_config_key": "reg",
        "metadata": {"region": "us"},
    }
    status, payload = await call(authgate, method, "/connections/metadata", body=body)
    assert status == 404
    assert payload == {
        "error": {"code": "unknown_connection", "message": not_found_message("ghost") + BULK_SUFFIX}
    }
    assert await all_metadata(authgate) == ORIGINAL
    assert await region_sent(authgate, "c1") == "eu"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_single_missing_connection_has_no_suffix(authgate: Authgate, method: str) -> None:
    ghosts: tuple[Any, ...] = ("ghost", ["ghost"])
    for connection_id in ghosts:  # a list of one counts as one (Nango's rule)
        body: dict[str, Any] = {
            "connection_id": connection_id,
            "provider_config_key": "reg",
            "metadata": {},
        }
        status, payload = await call(authgate, method, "/connections/metadata", body=body)
        assert (status, payload) == (
            404,
            {"error": {"code": "unknown_connection", "message": not_found_message("ghost")}},
        )
    # An unknown integration is the same answer.
    body = {"connection_id": "c1", "provider_config_key": "nope", "metadata": {}}
    status, payload = await call(authgate, method, "/connections/metadata", body=body)
    assert status == 404
    assert payload["error"]["message"] == not_found_message("c1", "nope")
    assert await all_metadata(authgate) == ORIGINAL


async def test_duplicate_ids_and_an_empty_list(authgate: Authgate) -> None:
    body = {"connection_id": ["c2", "c2"], "provider_config_key": "reg", "metadata": {"d": 1}}
    status, _ = await call(authgate, "PATCH", "/connections/metadata", body=body)
    assert status == 200
    assert await metadata_of(authgate, "c2") == {**ORIGINAL["c2"], "d": 1}
    body = {"connection_id": [], "provider_config_key": "reg", "metadata": {"d": 2}}
    status, payload = await call(authgate, "POST", "/connections/metadata", body=body)
    assert (status, payload) == (201, body)
    assert await metadata_of(authgate, "c2") == {**ORIGINAL["c2"], "d": 1}


async def test_concurrent_merges_keep_every_key(authgate: Authgate) -> None:
    """Each PATCH adds its own key; a read-modify-write outside one transaction would
    lose some of them to the others."""

    async def add(index: int) -> int:
        body = {
            "connection_id": ["c1", "c2"],
            "provider_config_key": "reg",
            "metadata": {f"k{index}": index},
        }
        status, _ = await call(authgate, "PATCH", "/connections/metadata", body=body)
        return status

    assert set(await asyncio.gather(*(add(index) for index in range(25)))) == {200}
    expected = {f"k{index}": index for index in range(25)}
    assert await metadata_of(authgate, "c1") == {**ORIGINAL["c1"], **expected}
    assert await metadata_of(authgate, "c2") == {**ORIGINAL["c2"], **expected}


async def test_what_the_node_client_sends(authgate: Authgate) -> None:
    """setMetadata / updateMetadata: JSON bodies with the client's headers; connection ids
    with the characters people put in them."""
    await authgate.connection("reg", "user@example.com|{1}", {"type": "API_KEY", "apiKey": "k"})
    body = {
        "connection_id": "user@example.com|{1}",
        "provider_config_key": "reg",
        "metadata": {"a": [1, {"b": None}], "unicode": "\u00e9\u20ac"},
    }
    status, payload = await call(authgate, "POST", "/connections/metadata", body=body)
    assert (status, payload) == (201, body)
    stored = await metadata_of(authgate, "user@example.com|%7B1%7D")
    assert stored == body["metadata"]


@pytest.mark.parametrize(
    ("body", "path", "issue_code"),
    [
        ([], [], "invalid_type"),
        ("x", [], "invalid_type"),
        ({"provider_config_key": "reg", "metadata": {}}, ["connection_id"], "invalid_type"),
        ({"connection_id": "c1", "metadata": {}}, ["provider_config_key"], "invalid_type"),
        ({"connection_id": "c1", "provider_config_key": "reg"}, ["metadata"], "invalid_type"),
        (
            {"connection_id": "c1", "provider_config_key": "reg", "metadata": [1]},
            ["metadata"],
            "invalid_type",
        ),
        (
            {"connection_id": "c1", "provider_config_key": "reg", "metadata": None},
            ["metadata"],
            "invalid_type",
        ),
        (
            {"connection_id": "c1", "provider_config_key": "reg", "metadata": {}, "x": 1},
            [],
            "unrecognized_keys",
        ),
        (
            {"connection_id": 7, "provider_config_key": "reg", "metadata": {}},
            ["connection_id"],
            "invalid_union",
        ),
        (
            {"connection_id": ["c1", 2], "provider_config_key": "reg", "metadata": {}},
            ["connection_id", "1"],
            "invalid_type",
        ),
        (
            {"connection_id": ["c1", "caf\u00e9"], "provider_config_key": "reg", "metadata": {}},
            ["connection_id", "1"],
            "invalid_format",
        ),
        (
            {"connection_id": "", "provider_config_key": "reg", "metadata": {}},
            ["connection_id"],
            "invalid_format",
        ),
        (
            {"connection_id": "c1", "provider_config_key": "r/eg", "metadata": {}},
            ["provider_config_key"],
            "invalid_format",
        ),
        (
            {"connection_id": "c" * 256, "provider_config_key": "reg", "metadata": {}},
            ["connection_id"],
            "too_big",
        ),
        (
            {"connection_id": "c1", "provider_config_key": "reg", "metadata": {"k": "\u0000"}},
            ["metadata", "k"],
            "invalid_format",
        ),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_bad_bodies_are_invalid_body(
    authgate: Authgate, method: str, body: Any, path: list[str], issue_code: str
) -> None:
    status, payload = await call(authgate, method, "/connections/metadata", body=body)
    assert_issue(status, payload, "invalid_body", path, issue_code)
    assert await all_metadata(authgate) == ORIGINAL


async def test_metadata_routes_take_no_query(authgate: Authgate) -> None:
    body = {"connection_id": "c1", "provider_config_key": "reg", "metadata": {}}
    status, payload = await call(authgate, "POST", "/connections/metadata?x=1", body=body)
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")
    assert await all_metadata(authgate) == ORIGINAL


@pytest.mark.parametrize("raw", [b"{", b'{"connection_id": "c1",}', b"\xff"])
async def test_malformed_json_is_invalid_json(authgate: Authgate, raw: bytes) -> None:
    url = URL(str(authgate.url).rstrip("/") + "/connections/metadata", encoded=True)
    response = await authgate.session.post(
        url, data=raw, headers={**authgate.auth(), "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await json_of(response))["error"]["code"] == "invalid_json"
    assert await all_metadata(authgate) == ORIGINAL


# --- /connection/{connection_id}/metadata (deprecated) -------------------------------------


@pytest.mark.parametrize(("method", "status"), [("POST", 201), ("PATCH", 200)])
async def test_legacy_per_id_routes(authgate: Authgate, method: str, status: int) -> None:
    assert await region_sent(authgate, "c2") == "eu"
    body = {"region": "sa", "fresh": 1}
    answer, payload = await call(
        authgate, method, "/connection/c2/metadata?provider_config_key=reg", body=body
    )
    assert (answer, payload) == (status, body)
    merged = method == "PATCH"
    assert await metadata_of(authgate, "c2") == ({**ORIGINAL["c2"], **body} if merged else body)
    assert await region_sent(authgate, "c2") == "sa"


async def test_legacy_key_and_id_from_headers(authgate: Authgate) -> None:
    status, _ = await call(
        authgate,
        "PATCH",
        "/connection/c3/metadata",
        body={"via": "header"},
        headers={"Provider-Config-Key": "reg"},
    )
    assert status == 200
    assert await metadata_of(authgate, "c3") == {**ORIGINAL["c3"], "via": "header"}
    status, _ = await call(
        authgate,
        "POST",
        "/connection//metadata?provider_config_key=reg",
        body={"via": "Connection-Id"},
        headers={"Connection-Id": "c1"},
    )
    assert status == 201
    assert await metadata_of(authgate, "c1") == {"via": "Connection-Id"}


async def test_legacy_empty_body_is_empty_metadata(authgate: Authgate) -> None:
    status, payload = await call(
        authgate, "POST", "/connection/c1/metadata?provider_config_key=reg"
    )
    assert (status, payload) == (201, {})
    assert await metadata_of(authgate, "c1") == {}


async def test_legacy_unknown_connection_is_the_legacy_404(authgate: Authgate) -> None:
    status, payload = await call(
        authgate, "POST", "/connection/ghost/metadata?provider_config_key=reg", body={"a": 1}
    )
    assert status == 404
    payload_fields = {"connectionId": "ghost", "providerConfigKey": "reg", "environmentName": "dev"}
    assert payload == {
        "error": {
            "message": "No connection matching the provided params of 'connection_id' and"
            " 'provider_config_key'. Please make sure these values exist in the Nango dashboard"
            ' {\n  "connectionId": "ghost",\n  "providerConfigKey": "reg",\n'
            '  "environmentName": "dev"\n}',
            "code": "unknown_connection",
            "payload": payload_fields,
        }
    }
    status, payload = await call(
        authgate, "PATCH", "/connection/c1/metadata?provider_config_key=nope", body={"a": 1}
    )
    assert status == 404
    assert payload["error"]["payload"]["providerConfigKey"] == "nope"
    assert await all_metadata(authgate) == ORIGINAL


async def test_legacy_missing_key_or_id(authgate: Authgate) -> None:
    status, payload = await call(authgate, "POST", "/connection/c1/metadata", body={"a": 1})
    assert (status, payload) == (
        400,
        {
            "error": {
                "message": "Missing param 'provider_config_key'.",
                "code": "missing_provider_config",
                "payload": {},
            }
        },
    )
    status, payload = await call(
        authgate, "POST", "/connection//metadata?provider_config_key=reg", body={"a": 1}
    )
    assert (status, payload) == (
        400,
        {
            "error": {
                "message": "Missing param 'connection_id'.",
                "code": "missing_connection",
                "payload": {},
            }
        },
    )
    assert await all_metadata(authgate) == ORIGINAL


@pytest.mark.parametrize(
    ("target", "body", "code"),
    [
        ("/connection/c1/metadata?provider_config_key=reg", [1], "invalid_body"),
        ("/connection/c1/metadata?provider_config_key=reg", "text", "invalid_body"),
        ("/connection/caf%C3%A9/metadata?provider_config_key=reg", {}, "invalid_uri_params"),
        ("/connection/a%00b/metadata?provider_config_key=reg", {}, "invalid_uri_params"),
        ("/connection/c1/metadata?provider_config_key=%00", {}, "invalid_query_params"),
        ("/connection/c1/metadata?provider_config_key=a&provider_config_key=b", {}, ""),
    ],
)
async def test_legacy_junk_is_4xx(authgate: Authgate, target: str, body: Any, code: str) -> None:
    for method in ("POST", "PATCH"):
        status, payload = await call(authgate, method, target, body=body)
        assert 400 <= status < 500, payload
        if code:
            assert payload["error"]["code"] == code
    assert await all_metadata(authgate) == ORIGINAL
