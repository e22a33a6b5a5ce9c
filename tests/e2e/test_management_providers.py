"""GET /providers, /providers/{provider} and /providers/{provider}/templates end to end
(reference §5): the catalogue as served, regex search, validation, and who may call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from credentials.providers import Catalogue, load_catalogue
from tests.e2e.conftest import Authgate, Factory
from tests.e2e.management_calls import assert_error, assert_issue, call

DEFAULT_PUBLIC_URL = "http://127.0.0.1:3003"
MALFORMED_SESSION = "nango_connect_session_not-hex"


def catalogue_of(authgate: Authgate) -> Catalogue:
    return load_catalogue(Path(authgate.environ["AUTHGATE_PROVIDERS_FILE"]))


def names(payload: Any) -> list[str]:
    return [entry["name"] for entry in payload["data"]]


async def search(authgate: Authgate, term: str) -> list[str]:
    status, payload = await call(authgate, "GET", f"/providers?search={term}")
    assert status == 200, payload
    return names(payload)


# --- listing -------------------------------------------------------------------------------


async def test_every_provider_is_listed_in_catalogue_order(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers")
    assert status == 200
    assert set(payload) == {"data"}
    catalogue = catalogue_of(authgate)
    assert names(payload) == catalogue.names()
    assert {"github", "fake-oauth", "fake-api-key"} <= set(names(payload))
    for entry in payload["data"]:
        provider = catalogue.get(entry["name"])
        assert provider is not None
        logo = f"{DEFAULT_PUBLIC_URL}/images/template-logos/{provider.name}.svg"
        assert entry == {**provider.definition, "name": provider.name, "logo_url": logo}


async def test_entries_are_served_as_the_catalogue_spells_them(authgate: Authgate) -> None:
    _, payload = await call(authgate, "GET", "/providers")
    fake = next(entry for entry in payload["data"] if entry["name"] == "fake-api-key")
    assert fake["display_name"] == "Fake API key"
    assert fake["auth_mode"] == "API_KEY"
    assert fake["docs"] == "https://docs.example.com/fake-api-key"
    assert fake["proxy"]["headers"]["x-api-key"] == "${apiKey}"
    assert fake["proxy"]["query"] == {"key": "${apiKey}"}


async def test_aliases_are_resolved_and_the_alias_key_dropped(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers/github-app")
    assert status == 200
    github = catalogue_of(authgate).get("github")
    assert github is not None
    entry = payload["data"]
    assert "alias" not in entry
    assert entry["name"] == "github-app"
    assert entry["auth_mode"] == "APP"
    # Inherited from the alias target, which the entry does not repeat.
    assert entry["proxy"] == github.definition["proxy"]


async def test_logo_url_follows_the_public_url(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_PUBLIC_URL="https://gate.example.com/")
    _, listed = await call(authgate, "GET", "/providers")
    assert all(
        entry["logo_url"] == f"https://gate.example.com/images/template-logos/{entry['name']}.svg"
        for entry in listed["data"]
    )
    _, one = await call(authgate, "GET", "/providers/github")
    assert one["data"]["logo_url"] == "https://gate.example.com/images/template-logos/github.svg"


# --- search --------------------------------------------------------------------------------


async def test_search_is_a_case_insensitive_match_on_the_name(authgate: Authgate) -> None:
    expected = [name for name in catalogue_of(authgate).names() if "github" in name]
    assert len(expected) >= 3
    assert await search(authgate, "GITHUB") == expected
    assert await search(authgate, "GitHub") == expected
    assert await search(authgate, "ub-pa") == ["github-pat"]


async def test_search_dot_is_a_wildcard(authgate: Authgate) -> None:
    assert await search(authgate, "git.ab") == [
        name for name in catalogue_of(authgate).names() if name.startswith("gitlab")
    ]
    assert await search(authgate, "fake.oauth") == ["fake-oauth"]


async def test_search_ignores_the_display_name(authgate: Authgate) -> None:
    # "Fake without base URL" is fake-nobase's display name, not its name.
    assert await search(authgate, "without") == []
    assert await search(authgate, "nobase") == ["fake-nobase"]


async def test_search_plus_is_a_space(authgate: Authgate) -> None:
    # A legal search that can match no name (names have no spaces).
    assert await search(authgate, "fake+oauth") == []
    assert await search(authgate, "fake%20oauth") == []


async def test_search_cannot_stall_the_server(authgate: Authgate) -> None:
    started = time.monotonic()
    assert await search(authgate, "." * 255) == []
    assert await search(authgate, "a" * 255) == []
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("query", "path", "issue_code"),
    [
        ("search=git*", ["search"], "invalid_format"),
        ("search=(git)", ["search"], "invalid_format"),
        ("search=git%5Bh%5D", ["search"], "invalid_format"),
        ("search=a%7Cb", ["search"], "invalid_format"),
        ("search=", ["search"], "invalid_format"),
        ("search=%00", ["search"], "invalid_format"),
        ("search=" + "a" * 256, ["search"], "too_big"),
        ("search=a&search=b", ["search"], "invalid_type"),
        ("search[x]=a", ["search"], "invalid_type"),
        ("limit=10", [], "unrecognized_keys"),
        ("search=git&page=2", [], "unrecognized_keys"),
    ],
)
async def test_bad_queries_are_invalid_query_params(
    authgate: Authgate, query: str, path: list[str], issue_code: str
) -> None:
    status, payload = await call(authgate, "GET", f"/providers?{query}")
    assert_issue(status, payload, "invalid_query_params", path, issue_code)


async def test_pattern_issue_names_the_rule(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers?search=git%2A")
    found = assert_issue(status, payload, "invalid_query_params", ["search"], "invalid_format")
    assert found["message"] == "Invalid string: must match pattern /^[a-zA-Z0-9~:.@ _-]+$/"


# --- one provider ----------------------------------------------------------------------------


async def test_get_provider_returns_the_entry(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers/fake-oauth")
    assert status == 200
    provider = catalogue_of(authgate).get("fake-oauth")
    assert provider is not None
    assert payload == {
        "data": {
            **provider.definition,
            "name": "fake-oauth",
            "logo_url": f"{DEFAULT_PUBLIC_URL}/images/template-logos/fake-oauth.svg",
        }
    }


async def test_unknown_provider_is_404(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers/no-such-provider")
    assert_error(status, payload, 404, "not_found", "Unknown provider no-such-provider")
    assert payload == {
        "error": {"code": "not_found", "message": "Unknown provider no-such-provider"}
    }


@pytest.mark.parametrize(
    ("raw_name", "issue_code"),
    [
        ("git.hub", "invalid_format"),
        ("git%20hub", "invalid_format"),
        ("git%2Fhub", "invalid_format"),
        ("git~hub", "invalid_format"),
        ("%00", "invalid_format"),
        ("%E2%82%AC", "invalid_format"),
        ("a" * 256, "too_big"),
    ],
)
async def test_bad_provider_names_are_invalid_uri_params(
    authgate: Authgate, raw_name: str, issue_code: str
) -> None:
    status, payload = await call(authgate, "GET", f"/providers/{raw_name}")
    assert_issue(status, payload, "invalid_uri_params", ["provider"], issue_code)


async def test_get_provider_takes_no_query(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers/github?search=git")
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")


async def test_trailing_slashes_are_routed(authgate: Authgate) -> None:
    status, listed = await call(authgate, "GET", "/providers/?search=fake.oauth")
    assert (status, names(listed)) == (200, ["fake-oauth"])
    status, one = await call(authgate, "GET", "/providers/github/")
    assert (status, one["data"]["name"]) == (200, "github")
    status, templates = await call(authgate, "GET", "/providers/github/templates/")
    assert (status, templates) == (200, {"data": []})


async def test_providers_are_read_only(authgate: Authgate) -> None:
    for method, path in (("POST", "/providers"), ("DELETE", "/providers/github")):
        status, payload = await call(authgate, method, path)
        assert_error(status, payload, 405, "method_not_allowed")


# --- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["github", "fake-oauth", "no-such-provider"])
async def test_templates_are_an_empty_list(authgate: Authgate, provider: str) -> None:
    status, payload = await call(authgate, "GET", f"/providers/{provider}/templates")
    assert (status, payload) == (200, {"data": []})


async def test_templates_validate_query_and_name(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/providers/github/templates?x=1")
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")
    status, payload = await call(authgate, "GET", "/providers/git.hub/templates")
    assert_issue(status, payload, "invalid_uri_params", ["provider"], "invalid_format")


# --- who may call ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/providers", "/providers/github", "/providers/github/templates"])
async def test_a_secret_key_is_required(authgate: Authgate, path: str) -> None:
    status, payload = await call(authgate, "GET", path, auth=False)
    assert_error(status, payload, 401, "missing_auth_header")
    status, payload = await call(authgate, "GET", path, key="not-a-uuid")
    assert_error(status, payload, 401, "invalid_secret_key_format")
    status, payload = await call(authgate, "GET", path, key="7d7e0ac5-1c5e-4f6e-9a55-8d2d4c1f3a21")
    assert_error(status, payload, 401, "unknown_account")


@pytest.mark.parametrize("path", ["/providers", "/providers/github"])
async def test_a_session_token_is_judged_as_a_token(authgate: Authgate, path: str) -> None:
    """These routes take connect-session tokens: a malformed one gets the token's error,
    not a secret-key error (no fallback)."""
    status, payload = await call(authgate, "GET", path, key=MALFORMED_SESSION)
    assert_error(status, payload, 401, "invalid_connect_session_token_format")


async def test_templates_take_no_session_token(authgate: Authgate) -> None:
    status, payload = await call(
        authgate, "GET", "/providers/github/templates", key=MALFORMED_SESSION
    )
    assert_error(status, payload, 401, "invalid_secret_key_format")


async def test_a_connect_session_token_may_list_and_read_providers(authgate: Authgate) -> None:
    status, created = await call(
        authgate, "POST", "/connect/sessions", body={"end_user": {"id": "user-1"}}
    )
    assert status == 201, created
    token = created["data"]["token"]
    status, listed = await call(authgate, "GET", "/providers?search=fake.oauth", key=token)
    assert (status, names(listed)) == (200, ["fake-oauth"])
    status, one = await call(authgate, "GET", "/providers/github", key=token)
    assert (status, one["data"]["name"]) == (200, "github")
    # Templates are for secret keys only.
    status, payload = await call(authgate, "GET", "/providers/github/templates", key=token)
    assert_error(status, payload, 401, "invalid_secret_key_format")
