"""Which connections can be renewed, and that renew dispatches on the stored type."""

from __future__ import annotations

from typing import Any

import pytest

from credentials.grants import GrantError, GrantRequest, TokenHttp, renew, renewable
from credentials.grants.base import Grant
from tests.credentials.grants.fakes import TokenServer, answer, grant_request, provider
from tests.factories import make_connection


@pytest.mark.parametrize(
    ("auth_mode", "credentials", "expected"),
    [
        ("OAUTH2", {"type": "OAUTH2", "access_token": "a", "refresh_token": "r"}, True),
        ("OAUTH2", {"type": "OAUTH2", "access_token": "a"}, False),
        ("OAUTH2", {"type": "OAUTH2", "access_token": "a", "refresh_token": ""}, False),
        ("OAUTH2_CC", {"type": "OAUTH2_CC", "token": "t"}, True),
        ("APP", {"type": "APP", "access_token": "a"}, True),
        ("JWT", {"type": "JWT"}, True),
        ("TWO_STEP", {"type": "TWO_STEP"}, True),
        ("API_KEY", {"type": "API_KEY", "apiKey": "k"}, False),
        ("BASIC", {"type": "BASIC", "username": "u"}, False),
        ("OAUTH1", {"type": "OAUTH1"}, False),
        # no stored type: the provider's auth mode decides
        ("OAUTH2_CC", {"token": "t"}, True),
        ("OAUTH2", {"access_token": "a", "refresh_token": "r"}, True),
        # the stored type wins over the provider's mode
        ("OAUTH2", {"type": "API_KEY", "apiKey": "k", "refresh_token": "r"}, False),
    ],
)
def test_renewable(auth_mode: str, credentials: dict[str, Any], expected: bool) -> None:
    assert renewable(make_connection(credentials), provider(auth_mode)) is expected


async def test_renew_dispatches_on_the_stored_type(server: TokenServer, http: TokenHttp) -> None:
    # An OAUTH2 provider whose connection holds client-credentials credentials: the
    # client credentials grant runs, because that is what the connection has.
    server.on("/token", answer({"access_token": "cc"}))
    request = grant_request(
        http,
        provider("OAUTH2", token_url={"OAUTH2CC": server.url("/token")}),
        {"type": "OAUTH2_CC", "client_id": "i", "client_secret": "s"},
    )
    grant = await renew(request)
    assert grant.credentials["type"] == "OAUTH2_CC"
    assert server.last.form()["grant_type"] == "client_credentials"


async def test_renew_refuses_what_it_cannot_renew(http: TokenHttp) -> None:
    request = grant_request(http, provider("API_KEY"), {"type": "API_KEY", "apiKey": "secret-k"})
    with pytest.raises(GrantError) as caught:
        await renew(request)
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert "secret-k" not in str(caught.value)


def test_reprs_hide_credentials(http: TokenHttp) -> None:
    request: GrantRequest = grant_request(
        http, provider("OAUTH2"), {"type": "OAUTH2", "refresh_token": "hidden-refresh"}
    )
    grant = Grant({"type": "OAUTH2", "access_token": "hidden-access"}, {"jwtToken": "hidden-jwt"})
    text = repr(request) + repr(grant)
    assert "hidden" not in text
    assert "access_token" in repr(grant)  # field names are shown
