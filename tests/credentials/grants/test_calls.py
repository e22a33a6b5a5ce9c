"""Pure request building: token URLs, parameters, encodings, client authentication."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from credentials.grants import GrantError, TokenCall, TokenHttp
from credentials.grants.calls import (
    ClientCredentials,
    basic_authorization,
    build_call,
    complete_params,
    endpoint_url,
    form_text,
)
from tests.credentials.grants.fakes import provider
from tests.factories import make_connection


def url_for(token_url: Any, config: dict[str, Any], mode: str = "OAUTH2", **extra: Any) -> str:
    connection = make_connection({"type": "TWO_STEP", "tenant": "a b"}, connection_config=config)
    return endpoint_url(provider(mode, token_url=token_url, **extra), mode, connection)


def test_config_values_are_encoded_as_uri_components() -> None:
    template = "https://${connectionConfig.host}.example.com/t/${connectionConfig.path}"
    assert url_for(template, {"host": "acme", "path": "x/y?z=1&w"}) == (
        "https://acme.example.com/t/x%2Fy%3Fz%3D1%26w"
    )


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_segments_from_config_cannot_climb_the_token_path(dots: str) -> None:
    template = "https://api.example.com/app/installations/${connectionConfig.id}/access_tokens"
    url = url_for(template, {"id": dots})
    assert url.endswith("/installations/" + "%2E" * len(dots) + "/access_tokens")


@pytest.mark.parametrize("dots", ["%2E%2E", "..", "%2e"])
async def test_the_token_client_refuses_dot_segments(dots: str) -> None:
    http = TokenHttp(allow_private=False)
    try:
        with pytest.raises(GrantError) as refused:
            await http.send(TokenCall("POST", f"https://api.example.com/a/{dots}/token"))
    finally:
        await http.close()
    assert refused.value.reason == "misconfigured"


def test_skip_encode_base_url_leaves_values_as_they_are() -> None:
    template = "${connectionConfig.base}/token"
    url = url_for(template, {"base": "https://h:8443/p"}, token_url_skip_encode=["base_url"])
    assert url == "https://h:8443/p/token"


def test_fallback_and_stray_prefix() -> None:
    template = "https://${connectionConfig.hostname}/t || https://login.example.com/t"
    assert url_for(template, {}) == "https://login.example.com/t"
    assert url_for(template, {"hostname": ""}) == "https://login.example.com/t"
    assert url_for(template, {"connectionConfig.hostname": "h.example"}) == "https://h.example/t"


def test_credentials_only_when_asked() -> None:
    connection = make_connection({"tenant": "a b"})
    two_step = provider("TWO_STEP", token_url="https://x/${credentials.tenant}")
    assert (
        endpoint_url(two_step, "TWO_STEP", connection, with_credentials=True) == "https://x/a%20b"
    )
    with pytest.raises(GrantError, match=r"needs credentials\.tenant"):
        endpoint_url(two_step, "TWO_STEP", connection)


def test_map_without_the_mode_is_misconfigured() -> None:
    with pytest.raises(GrantError, match="no token_url for OAUTH2") as caught:
        url_for({"APP": "https://x"}, {})
    assert caught.value.permanent


def test_a_value_that_looks_like_a_template_is_not_reinterpolated() -> None:
    assert url_for(
        "https://x/${connectionConfig.a}", {"a": "${connectionConfig.b}", "b": "no"}
    ) == ("https://x/%24%7BconnectionConfig.b%7D")


def test_complete_params_keeps_scalars_and_lists() -> None:
    values = {"connectionConfig": {"a": "A"}, "n": 3}
    params = {"s": "x-${connectionConfig.a}", "n": 5, "b": True, "l": ["${n}", "z"]}
    assert complete_params(params, values, what="token_params") == {
        "s": "x-A",
        "n": 5,
        "b": True,
        "l": ["3", "z"],
    }
    with pytest.raises(GrantError, match=r"token_params\.s .*needs connectionConfig\.zz"):
        complete_params({"s": "${connectionConfig.zz}"}, values, what="token_params")


def test_build_call_encodings() -> None:
    params = {"a": "x y&z", "b": True, "n": 2.0, "l": ["1", "2"]}
    form = build_call("https://x/t", params)
    assert form.method == "POST"
    assert form.body == b"a=x+y%26z&b=true&n=2&l=1&l=2"
    assert form.headers == {"Content-Type": "application/x-www-form-urlencoded"}

    json = build_call("https://x/t", params, encoding="json", headers={"Accept": "a/b"})
    assert json.body == b'{"a":"x y&z","b":true,"n":2.0,"l":["1","2"]}'
    assert json.headers == {"Accept": "a/b", "Content-Type": "application/json"}

    query = build_call("https://x/t?k=1", {"a": "x y"}, encoding="query")
    assert (query.url, query.body) == ("https://x/t?k=1&a=x+y", None)
    assert build_call("https://x/t", {"a": "1"}, method="get").url == "https://x/t?a=1"


def test_form_text_spells_values_like_javascript() -> None:
    assert [form_text(v) for v in (True, False, 3, 2.0, 2.5, "s", {"k": 1})] == [
        "true",
        "false",
        "3",
        "2",
        "2.5",
        "s",
        '{"k":1}',
    ]


def test_basic_authorization() -> None:
    header = basic_authorization(ClientCredentials("id:with:colons", "sec ret"))
    assert base64.b64decode(header.removeprefix("Basic ")) == b"id:with:colons:sec ret"
    with pytest.raises(GrantError, match="client_secret"):
        basic_authorization(ClientCredentials("public"))


def test_client_repr_hides_the_secret() -> None:
    assert "hush" not in repr(ClientCredentials("id", "hush"))
