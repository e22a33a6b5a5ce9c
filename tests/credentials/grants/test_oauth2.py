"""OAUTH2 refresh against a fake token endpoint that validates what it receives."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from credentials.grants import GrantError, TokenHttp, renew
from credentials.grants.oauth2 import refresh_call
from tests.credentials.grants.fakes import (
    Received,
    TokenServer,
    answer,
    grant_request,
    provider,
    refresh_endpoint,
)

CLIENT = {"client_id": "client-abc", "client_secret": "client-secret-xyz"}
STORED = {
    "type": "OAUTH2",
    "access_token": "old-access-token",
    "refresh_token": "refresh-token-1",
    "expires_at": "2025-12-31T23:00:00.000Z",
    "raw": {"access_token": "old-access-token"},
}


def oauth_provider(server: TokenServer, **definition: Any) -> Any:
    return provider("OAUTH2", token_url=server.url("/oauth/token"), **definition)


async def test_refresh_posts_the_grant_and_rotates_the_refresh_token(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/oauth/token",
        refresh_endpoint(
            client=("client-abc", "client-secret-xyz"),
            refresh_token="refresh-token-1",
            answer_with={
                "access_token": "new-access",
                "refresh_token": "refresh-token-2",
                "expires_in": 3600,
                "token_type": "bearer",
            },
        ),
    )
    grant = await renew(grant_request(http, oauth_provider(server), STORED, client=CLIENT))

    assert grant.credentials == {
        "type": "OAUTH2",
        "access_token": "new-access",
        "refresh_token": "refresh-token-2",
        "expires_at": "2026-01-01T01:00:00.000Z",
        "raw": {
            "access_token": "new-access",
            "refresh_token": "refresh-token-2",
            "expires_in": 3600,
            "token_type": "bearer",
        },
    }
    assert grant.connection_config is None
    assert server.last.form() == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-token-1",
        "client_id": "client-abc",
        "client_secret": "client-secret-xyz",
    }


async def test_a_response_without_refresh_token_keeps_the_stored_one_and_no_expiry(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/oauth/token",
        refresh_endpoint(
            client=("client-abc", "client-secret-xyz"),
            refresh_token="refresh-token-1",
            answer_with={"access_token": "new-access"},
        ),
    )
    grant = await renew(grant_request(http, oauth_provider(server), STORED, client=CLIENT))

    assert grant.credentials["refresh_token"] == "refresh-token-1"
    assert "expires_at" not in grant.credentials  # nothing said when: non-expiring


async def test_grant_type_is_refresh_token_whatever_the_params_say(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/oauth/token",
        refresh_endpoint(
            client=("client-abc", "client-secret-xyz"),
            refresh_token="refresh-token-1",
            answer_with={"access_token": "new-access"},
        ),
    )
    definition = {
        "token_params": {"grant_type": "authorization_code", "audience": "api"},
    }
    await renew(grant_request(http, oauth_provider(server, **definition), STORED, client=CLIENT))
    assert server.last.form()["grant_type"] == "refresh_token"
    assert server.last.form()["audience"] == "api"  # token_params stand in for refresh_params

    definition = {"refresh_params": {"grant_type": "password", "resource": "${connectionConfig.r}"}}
    request = grant_request(
        http,
        oauth_provider(server, **definition),
        STORED,
        client=CLIENT,
        connection_config={"r": "https://res"},
    )
    await renew(request)
    assert server.last.form()["grant_type"] == "refresh_token"
    assert server.last.form()["resource"] == "https://res"


async def test_basic_client_authentication_and_json_body(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/oauth/token",
        refresh_endpoint(
            client=("client-abc", "client-secret-xyz"),
            refresh_token="refresh-token-1",
            answer_with={"access_token": "new-access"},
            basic=True,
            json_body=True,
        ),
    )
    definition = {"token_request_auth_method": "basic", "body_format": "json"}
    grant = await renew(
        grant_request(http, oauth_provider(server, **definition), STORED, client=CLIENT)
    )
    assert grant.credentials["access_token"] == "new-access"
    assert server.last.json() == {"grant_type": "refresh_token", "refresh_token": "refresh-token-1"}


async def test_authorization_method_header_also_means_basic(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/oauth/token",
        refresh_endpoint(
            client=("client-abc", "client-secret-xyz"),
            refresh_token="refresh-token-1",
            answer_with={"access_token": "new-access"},
            basic=True,
        ),
    )
    provider_ = oauth_provider(server, authorization_method="header")
    grant = await renew(grant_request(http, provider_, STORED, client=CLIENT))
    assert grant.credentials["access_token"] == "new-access"


async def test_config_override_client_is_used_and_carried_over(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/oauth/token",
        refresh_endpoint(
            client=("override-id", "override-secret"),
            refresh_token="refresh-token-1",
            answer_with={"access_token": "new-access"},
        ),
    )
    override = {"client_id": "override-id", "client_secret": "override-secret"}
    stored = {**STORED, "config_override": override}
    grant = await renew(grant_request(http, oauth_provider(server), stored, client=CLIENT))
    assert grant.credentials["config_override"] == override


async def test_alternate_access_token_path_with_an_object(
    server: TokenServer, http: TokenHttp
) -> None:
    body = {
        "ok": True,
        "team": {"id": "T123", "name": "acme"},
        "bot_user_id": "U999",
        "is_enterprise_install": False,
        "authed_user": {"access_token": "user-token", "refresh_token": "user-rt", "expires_in": 60},
    }
    server.on("/oauth/token", answer(body))
    definition = {
        "alternate_access_token_response_path": "authed_user",
        "token_response_metadata": ["team.id", "bot_user_id", "is_enterprise_install", "team"],
    }
    request = grant_request(
        http,
        oauth_provider(server, **definition),
        STORED,
        client=CLIENT,
        connection_config={"kept": "yes", "bot_user_id": "U000"},
    )
    grant = await renew(request)

    assert grant.credentials["access_token"] == "user-token"
    assert grant.credentials["refresh_token"] == "user-rt"
    assert grant.credentials["expires_at"] == "2026-01-01T00:01:00.000Z"
    assert grant.credentials["raw"] == body
    # string/bool values are copied under the path as written; objects are not
    assert grant.connection_config == {
        "kept": "yes",
        "bot_user_id": "U999",
        "team.id": "T123",
        "is_enterprise_install": False,
    }


async def test_alternate_path_with_a_string_and_unchanged_metadata(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on("/oauth/token", answer({"data": {"token": "nested-token"}, "instance_url": "x"}))
    definition = {
        "alternate_access_token_response_path": "data.token",
        "token_response_metadata": ["instance_url"],
    }
    request = grant_request(
        http,
        oauth_provider(server, **definition),
        STORED,
        client=CLIENT,
        connection_config={"instance_url": "x"},
    )
    grant = await renew(request)
    assert grant.credentials["access_token"] == "nested-token"
    assert grant.connection_config is None  # nothing changed


async def test_a_urlencoded_answer_is_understood(server: TokenServer, http: TokenHttp) -> None:
    async def form_answer(request: web.Request, received: Received) -> web.Response:
        return web.Response(
            text="access_token=form-token&scope=repo&token_type=bearer",
            content_type="application/x-www-form-urlencoded",
        )

    server.on("/oauth/token", form_answer)
    grant = await renew(grant_request(http, oauth_provider(server), STORED, client=CLIENT))
    assert grant.credentials["access_token"] == "form-token"


async def test_the_token_url_is_interpolated_with_encoded_config(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on("/t/a%2Fb%20c/token", answer({"access_token": "tok"}))
    template = server.url("/t/${connectionConfig.tenant}/token")
    request = grant_request(
        http,
        provider("OAUTH2", token_url=template),
        STORED,
        client=CLIENT,
        connection_config={"tenant": "a/b c"},
    )
    await renew(request)
    assert server.last.raw_path == "/t/a%2Fb%20c/token"


async def test_token_url_map_uses_the_oauth2_entry(server: TokenServer, http: TokenHttp) -> None:
    server.on("/user-token", answer({"access_token": "tok"}))
    token_url = {"OAUTH2": server.url("/user-token"), "APP": server.url("/app-token")}
    await renew(grant_request(http, provider("OAUTH2", token_url=token_url), STORED, client=CLIENT))
    assert server.last.path == "/user-token"


async def test_no_refresh_token_is_permanent_and_sends_nothing(
    server: TokenServer, http: TokenHttp
) -> None:
    stored = {key: value for key, value in STORED.items() if key != "refresh_token"}
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, oauth_provider(server), stored, client=CLIENT))
    assert (caught.value.reason, caught.value.permanent) == ("no_refresh_token", True)
    assert server.received == []


@pytest.mark.parametrize(
    ("definition", "config", "needs"),
    [
        ({}, {}, "no token_url"),
        ({"token_url": "https://${connectionConfig.subdomain}.example.com/t"}, {}, "subdomain"),
        (
            {
                "token_url": "https://x.example.com/t",
                "refresh_params": {"a": "${connectionConfig.a}"},
            },
            {},
            "refresh_params.a",
        ),
    ],
)
async def test_misconfigured_provider_is_permanent(
    http: TokenHttp, definition: dict[str, Any], config: dict[str, Any], needs: str
) -> None:
    request = grant_request(
        http, provider("OAUTH2", **definition), STORED, client=CLIENT, connection_config=config
    )
    with pytest.raises(GrantError) as caught:
        await renew(request)
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert needs in str(caught.value)


def test_integration_without_a_client_is_misconfigured(
    server: TokenServer, http: TokenHttp
) -> None:
    request = grant_request(http, oauth_provider(server), STORED, client=None)
    with pytest.raises(GrantError, match="client_id") as caught:
        refresh_call(request.connection, request.integration, request.provider)
    assert caught.value.permanent


def test_a_public_client_sends_only_its_id(server: TokenServer, http: TokenHttp) -> None:
    request = grant_request(http, oauth_provider(server), STORED, client={"client_id": "pub"})
    call = refresh_call(request.connection, request.integration, request.provider)
    assert call.body == b"grant_type=refresh_token&refresh_token=refresh-token-1&client_id=pub"
    assert call.headers == {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
    }
