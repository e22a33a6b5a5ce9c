"""GET /environment-variables end to end (reference §9): a bare array of the caller's
environment's variables, decrypted; the operator CLI writes them from another process."""

from __future__ import annotations

import uuid

import pytest

from credentials.secret_keys import generate_secret_key, hash_secret_key
from management.request_context import CORE
from tests.e2e.conftest import Authgate
from tests.e2e.management_calls import assert_error, assert_issue, call
from tests.e2e.operator_cli import run_cli


async def dev_id(authgate: Authgate) -> int:
    environment = await authgate.app[CORE].store.get_environment("dev")
    assert environment is not None
    return environment.id


async def variables(authgate: Authgate, key: str | None = None) -> object:
    status, payload = await call(authgate, "GET", "/environment-variables", key=key)
    assert status == 200, payload
    return payload


async def test_no_variables_is_an_empty_array(authgate: Authgate) -> None:
    assert await variables(authgate) == []


async def test_variables_are_a_bare_array_sorted_by_name(authgate: Authgate) -> None:
    store = authgate.app[CORE].store
    environment_id = await dev_id(authgate)
    await store.set_environment_variable(environment_id, "ZETA", "last")
    await store.set_environment_variable(environment_id, "ALPHA", "première ✓")
    await store.set_environment_variable(environment_id, "EMPTY", "")
    await store.set_environment_variable(environment_id, "ALPHA", "replaced")
    assert await variables(authgate) == [
        {"name": "ALPHA", "value": "replaced"},
        {"name": "EMPTY", "value": ""},
        {"name": "ZETA", "value": "last"},
    ]


async def test_only_the_callers_environment_is_visible(authgate: Authgate) -> None:
    store = authgate.app[CORE].store
    other = await store.create_environment(f"other-{uuid.uuid4().hex[:8]}")
    other_key = generate_secret_key()
    await store.add_secret_key(other.id, hash_secret_key(other_key), "test")
    await store.set_environment_variable(other.id, "SECRET", "theirs")
    await store.set_environment_variable(await dev_id(authgate), "SECRET", "ours")
    assert await variables(authgate) == [{"name": "SECRET", "value": "ours"}]
    assert await variables(authgate, other_key) == [{"name": "SECRET", "value": "theirs"}]


async def test_cli_writes_are_served_at_once(authgate: Authgate) -> None:
    """The CLI is another process on the same database; values read from stdin keep
    secrets out of the command line."""
    secret = "s3cr3t value with spaces\tand a tab"
    result = await run_cli(
        authgate.environ, "env", "set-var", "dev", "API_TOKEN", "-", stdin=secret + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stderr + result.stdout
    result = await run_cli(authgate.environ, "env", "set-var", "dev", "REGION", "eu-west-1")
    assert result.returncode == 0, result.stderr
    assert await variables(authgate) == [
        {"name": "API_TOKEN", "value": secret},
        {"name": "REGION", "value": "eu-west-1"},
    ]
    result = await run_cli(authgate.environ, "env", "unset-var", "dev", "API_TOKEN")
    assert result.returncode == 0, result.stderr
    assert await variables(authgate) == [{"name": "REGION", "value": "eu-west-1"}]


@pytest.mark.parametrize("query", ["?name=x", "?limit=1", "?x", "?a[b]=c"])
async def test_no_query_is_allowed(authgate: Authgate, query: str) -> None:
    status, payload = await call(authgate, "GET", f"/environment-variables{query}")
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")


@pytest.mark.parametrize(
    ("raw", "path", "issue_code"),
    [
        (b'{"name": "x"}', [], "unrecognized_keys"),
        (b"[]", [], "invalid_type"),
        (b'"x"', [], "invalid_type"),
        (b"1", [], "invalid_type"),
    ],
)
async def test_no_body_is_allowed(
    authgate: Authgate, raw: bytes, path: list[str], issue_code: str
) -> None:
    status, payload = await call(
        authgate,
        "GET",
        "/environment-variables",
        raw=raw,
        headers={"Content-Type": "application/json"},
    )
    assert_issue(status, payload, "invalid_body", path, issue_code)


async def test_malformed_body_is_invalid_json(authgate: Authgate) -> None:
    status, payload = await call(
        authgate,
        "GET",
        "/environment-variables",
        raw=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, payload, 400, "invalid_json")


@pytest.mark.parametrize("raw", [b"", b"{}", b"  \n"])
async def test_empty_json_requests_are_accepted(authgate: Authgate, raw: bytes) -> None:
    """The Node client sends Content-Type: application/json on this bodiless GET."""
    status, payload = await call(
        authgate,
        "GET",
        "/environment-variables",
        raw=raw,
        headers={"Content-Type": "application/json"},
    )
    assert (status, payload) == (200, [])


async def test_trailing_slash_is_routed(authgate: Authgate) -> None:
    assert await call(authgate, "GET", "/environment-variables/") == (200, [])


async def test_only_get_is_routed(authgate: Authgate) -> None:
    for method in ("POST", "PUT", "DELETE"):
        status, payload = await call(authgate, method, "/environment-variables")
        assert_error(status, payload, 405, "method_not_allowed")


async def test_a_secret_key_is_required(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/environment-variables", auth=False)
    assert_error(status, payload, 401, "missing_auth_header")
    status, payload = await call(
        authgate, "GET", "/environment-variables", key="nango_connect_session_" + "a" * 64
    )
    assert_error(status, payload, 401, "invalid_secret_key_format")


async def test_non_json_content_type_is_415(authgate: Authgate) -> None:
    status, payload = await call(
        authgate, "GET", "/environment-variables", raw=b"", headers={"Content-Type": "text/plain"}
    )
    assert_error(status, payload, 415, "invalid_content_type")
