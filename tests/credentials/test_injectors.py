from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature as oauth_signature

from credentials.injectors import (
    DEFAULT_AUTH,
    Injection,
    InjectionError,
    InvalidCredentialValue,
    UnsignableRequest,
    UnsupportedAuth,
    build_injection,
    credential_type,
    render_dynamic,
)
from credentials.models import Connection, Integration, Provider
from credentials.providers import Catalogue, load_catalogue, parse_catalogue
from credentials.templates import request_values
from tests.factories import make_connection, make_integration

SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def provider(catalogue: Catalogue, name: str) -> Provider:
    found = catalogue.get(name)
    assert found is not None, name
    return found


def connection(
    credentials: dict[str, Any], config: dict[str, Any] | None = None, name: str = "p"
) -> Connection:
    return make_connection(
        credentials, provider=name, provider_config_key=name, connection_config=config or {}
    )


def integration(credentials: dict[str, Any] | None) -> Integration:
    return make_integration(credentials, provider="p", unique_key="p")


def custom_provider(proxy_yaml: str, auth_mode: str = "API_KEY") -> Provider:
    text = f"custom:\n    display_name: Custom\n    auth_mode: {auth_mode}\n    proxy:\n"
    text += "        base_url: https://api.example.com\n" + proxy_yaml
    return parse_catalogue(text, "test.yaml")["custom"]


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- default header per credential type ----------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({"type": "OAUTH2", "access_token": "at-1"}, "Bearer at-1"),
        ({"type": "APP", "access_token": "at-2", "jwtToken": "j"}, "Bearer at-2"),
        ({"type": "MCP_OAUTH2", "access_token": "at-3"}, "Bearer at-3"),
        ({"type": "OAUTH2_CC", "token": "t-1", "client_id": "c"}, "Bearer t-1"),
        ({"type": "JWT", "token": "t-2"}, "Bearer t-2"),
        ({"type": "SIGNATURE", "token": "t-3"}, "Bearer t-3"),
        ({"type": "TWO_STEP", "token": "t-4"}, "Bearer t-4"),
        ({"type": "BASIC", "username": "u", "password": "p"}, basic("u", "p")),
        ({"type": "BASIC", "username": "rk_live_1", "password": ""}, basic("rk_live_1", "")),
        ({"type": "BASIC", "username": "rk_live_1"}, basic("rk_live_1", "")),
    ],
)
def test_default_authorization(credentials: dict[str, Any], expected: str) -> None:
    injection = build_injection(connection(credentials), custom_provider(""), None)
    assert injection.headers == (("authorization", expected),)
    assert injection.query == ()


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"type": "NONE"},
        {"type": "API_KEY", "apiKey": "k"},
        {"type": "CUSTOM"},
        {"type": "BILL"},
    ],
)
def test_types_without_a_default_header(credentials: dict[str, Any]) -> None:
    assert build_injection(connection(credentials), custom_provider(""), None).headers == ()


@pytest.mark.parametrize("auth_type", ["TBA", "AWS_SIGV4", "SOMETHING_NEW"])
def test_unsupported_types(auth_type: str) -> None:
    credentials = {"type": auth_type, "oauth_token_secret": SECRET, "secret_access_key": SECRET}
    with pytest.raises(UnsupportedAuth) as caught:
        build_injection(connection(credentials), custom_provider(""), None)
    assert caught.value.credential_type == auth_type
    assert auth_type in str(caught.value)
    assert SECRET not in str(caught.value)


def test_registry_covers_the_supported_types() -> None:
    assert set(DEFAULT_AUTH) == {
        "OAUTH1",
        "OAUTH2",
        "APP",
        "MCP_OAUTH2",
        "MCP_OAUTH2_GENERIC",
        "OAUTH2_CC",
        "JWT",
        "SIGNATURE",
        "TWO_STEP",
        "BASIC",
        "API_KEY",
        "NONE",
        "CUSTOM",
        "BILL",
    }
    assert credential_type({}) == "NONE"
    assert credential_type({"type": ""}) == "NONE"
    assert credential_type({"type": 3}) == "int"


@pytest.mark.parametrize(
    ("credentials", "field"),
    [
        ({"type": "OAUTH2"}, "access_token"),
        ({"type": "OAUTH2", "access_token": ""}, "access_token"),
        ({"type": "OAUTH2", "access_token": 12}, "access_token"),
        ({"type": "OAUTH2", "access_token": SECRET + "\r\nx-evil: 1"}, "access_token"),
        ({"type": "OAUTH2_CC"}, "token"),
        ({"type": "BASIC", "password": SECRET}, "username"),
        ({"type": "BASIC", "username": "u", "password": 7}, "password"),
    ],
)
def test_malformed_credentials_never_echo_values(credentials: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCredentialValue) as caught:
        build_injection(connection(credentials), custom_provider(""), None)
    assert caught.value.field == field
    assert isinstance(caught.value, InjectionError)
    assert SECRET not in str(caught.value)
    assert "x-evil" not in str(caught.value)


# --- catalogue templates --------------------------------------------------------------------


def test_github_pat_bearer_from_api_key(catalogue: Catalogue) -> None:
    injection = build_injection(
        connection({"type": "API_KEY", "apiKey": "ghp_abc"}),
        provider(catalogue, "github-pat"),
        None,
    )
    assert dict(injection.headers) == {
        "authorization": "Bearer ghp_abc",
        "x-github-api-version": "2022-11-28",
        "accept": "application/vnd.github+json",
    }


def test_github_pat_version_from_connection_config(catalogue: Catalogue) -> None:
    injection = build_injection(
        connection({"type": "API_KEY", "apiKey": "ghp_abc"}, {"version": "2026-03-10"}),
        provider(catalogue, "github-pat"),
        None,
    )
    assert dict(injection.headers)["x-github-api-version"] == "2026-03-10"


def test_openai(catalogue: Catalogue) -> None:
    injection = build_injection(
        connection({"type": "API_KEY", "apiKey": "sk-proj-1"}), provider(catalogue, "openai"), None
    )
    assert injection.headers == (
        ("authorization", "Bearer sk-proj-1"),
        ("content-type", "application/json"),
    )


def test_zendesk_api_key_template_overrides_default_basic(catalogue: Catalogue) -> None:
    credentials = {"type": "BASIC", "username": "agent@acme.com", "password": "tok123"}
    injection = build_injection(
        connection(credentials, {"subdomain": "acme"}), provider(catalogue, "zendesk-api-key"), None
    )
    assert injection.headers == (("authorization", basic("agent@acme.com/token", "tok123")),)


def test_zendesk_api_key_keeps_default_when_template_cannot_resolve(catalogue: Catalogue) -> None:
    # Without a password the template stays unresolved: it is dropped, the default stays.
    credentials = {"type": "BASIC", "username": "agent@acme.com"}
    injection = build_injection(
        connection(credentials), provider(catalogue, "zendesk-api-key"), None
    )
    assert injection.headers == (("authorization", basic("agent@acme.com", "")),)


def test_stripe_api_key_basic_with_empty_password_and_optional_context(
    catalogue: Catalogue,
) -> None:
    stripe = provider(catalogue, "stripe-api-key")
    credentials = {"type": "BASIC", "username": "rk_live_123", "password": ""}
    without = build_injection(connection(credentials), stripe, None)
    assert without.headers == (("authorization", basic("rk_live_123", "")),)
    with_context = build_injection(connection(credentials, {"context": "acct_9"}), stripe, None)
    assert dict(with_context.headers) == {
        "authorization": basic("rk_live_123", ""),
        "stripe-context": "acct_9",
    }
    empty_context = build_injection(connection(credentials, {"context": ""}), stripe, None)
    assert "stripe-context" not in dict(empty_context.headers)


def test_shopify_access_token_header(catalogue: Catalogue) -> None:
    oauth = build_injection(
        connection({"type": "OAUTH2", "access_token": "shpua_1"}, {"subdomain": "shop"}),
        provider(catalogue, "shopify"),
        None,
    )
    assert dict(oauth.headers) == {
        "authorization": "Bearer shpua_1",
        "x-shopify-access-token": "shpua_1",
    }
    api_key = build_injection(
        connection({"type": "API_KEY", "apiKey": "shpat_2"}),
        provider(catalogue, "shopify-api-key"),
        None,
    )
    assert dict(api_key.headers) == {
        "x-shopify-access-token": "shpat_2",
        "content-type": "application/json",
    }


def test_notion_version_and_bearer(catalogue: Catalogue) -> None:
    injection = build_injection(
        connection({"type": "OAUTH2", "access_token": "secret_n"}),
        provider(catalogue, "notion"),
        None,
    )
    assert injection.headers == (
        ("authorization", "Bearer secret_n"),
        ("notion-version", "2022-06-28"),
    )


def test_github_app_uses_its_installation_token(catalogue: Catalogue) -> None:
    credentials = {"type": "APP", "access_token": "ghs_1", "jwtToken": "jwt"}
    injection = build_injection(connection(credentials), provider(catalogue, "github-app"), None)
    assert injection.headers == (("authorization", "Bearer ghs_1"),)


# --- synthetic providers: header rules -------------------------------------------------------


def test_headers_are_lower_cased_and_override_per_key() -> None:
    custom = custom_provider(
        "        headers:\n"
        "            Authorization: Token ${accessToken}\n"
        "            X-Extra: extra\n",
        auth_mode="OAUTH2",
    )
    injection = build_injection(connection({"type": "OAUTH2", "access_token": "a"}), custom, None)
    assert injection.headers == (("authorization", "Token a"), ("x-extra", "extra"))


def test_client_id_comes_from_the_integration() -> None:
    custom = custom_provider(
        "        headers:\n            x-client-id: ${clientId}\n", auth_mode="OAUTH2"
    )
    credentials = {"type": "OAUTH2", "access_token": "a"}
    with_client = build_injection(
        connection(credentials), custom, integration({"client_id": "cid", "client_secret": "cs"})
    )
    assert dict(with_client.headers)["x-client-id"] == "cid"
    without = build_injection(connection(credentials), custom, integration(None))
    assert "x-client-id" not in dict(without.headers)


def test_unresolved_header_and_query_are_dropped() -> None:
    custom = custom_provider(
        "        headers:\n"
        "            x-tenant: ${connectionConfig.tenant}\n"
        "            x-key: ${apiKey}\n"
        "        query:\n"
        "            key: ${apiKey}\n"
        "            region: ${connectionConfig.region}\n"
    )
    injection = build_injection(connection({"type": "API_KEY", "apiKey": "k1"}), custom, None)
    assert injection.headers == (("x-key", "k1"),)
    assert injection.query == (("key", "k1"),)
    configured = build_injection(
        connection({"type": "API_KEY", "apiKey": "k1"}, {"tenant": "t", "region": "eu"}),
        custom,
        None,
    )
    assert configured.headers == (("x-tenant", "t"), ("x-key", "k1"))
    assert configured.query == (("key", "k1"), ("region", "eu"))


def test_header_with_line_break_from_config_is_refused_without_echo() -> None:
    custom = custom_provider("        headers:\n            x-tenant: ${connectionConfig.tenant}\n")
    bad = connection({"type": "API_KEY", "apiKey": "k"}, {"tenant": SECRET + "\r\nx-evil: 1"})
    with pytest.raises(InvalidCredentialValue) as caught:
        build_injection(bad, custom, None)
    assert "x-tenant" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_two_step_token_in_own_header_suppresses_bearer() -> None:
    own = custom_provider(
        "        headers:\n            x-session: ${accessToken}\n", auth_mode="TWO_STEP"
    )
    credentials = {"type": "TWO_STEP", "token": "sess-1"}
    assert build_injection(connection(credentials), own, None).headers == (("x-session", "sess-1"),)
    cookie = custom_provider(
        "        headers:\n            cookie: ${credentials._cookies}\n", auth_mode="TWO_STEP"
    )
    cookies = {"type": "TWO_STEP", "token": "t", "_cookies": "sid=1"}
    assert build_injection(connection(cookies), cookie, None).headers == (("cookie", "sid=1"),)
    plain = custom_provider("        headers:\n            x-other: v\n", auth_mode="TWO_STEP")
    assert dict(build_injection(connection(credentials), plain, None).headers) == {
        "authorization": "Bearer sess-1",
        "x-other": "v",
    }


def test_provider_without_proxy_block() -> None:
    bare = parse_catalogue("bare:\n    display_name: B\n    auth_mode: OAUTH2\n", "t")["bare"]
    injection = build_injection(connection({"type": "OAUTH2", "access_token": "a"}), bare, None)
    assert injection == Injection(headers=(("authorization", "Bearer a"),))


# --- per-request headers ----------------------------------------------------------------------

DUO_LIKE = (
    "        headers:\n"
    "            date: ${now:ddd, DD MMM YYYY HH:mm:ss ZZ}\n"
    "            x-request-id: ${random}\n"
    "            x-echo-id: ${random}\n"
    '            authorization: "Basic ${base64(${credentials.username}:${hmacSha1Hex('
    "${now:ddd, DD MMM YYYY HH:mm:ss ZZ}\\n${method}\\n${host}\\n${path}, "
    '${credentials.password})})}"\n'
    "            x-static: fixed\n"
)
MOMENT = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)


def test_dynamic_headers_are_kept_raw_and_rendered_per_request() -> None:
    duo = custom_provider(DUO_LIKE, auth_mode="BASIC")
    credentials = {"type": "BASIC", "username": "ikey", "password": "skey"}
    injection = build_injection(connection(credentials), duo, None)
    assert dict(injection.headers) == {"authorization": basic("ikey", "skey"), "x-static": "fixed"}
    assert [name for name, _ in injection.dynamic_headers] == [
        "date",
        "x-request-id",
        "x-echo-id",
        "authorization",
    ]
    request = request_values("get", "https://api-1.duo.example/admin/v1/users?limit=5")
    headers = dict(
        render_dynamic(injection, request, clock=lambda: MOMENT, random_source=lambda: "rid-1")
    )
    date = "Tue, 05 Mar 2024 07:08:09 +0000"
    canonical = f"{date}\nGET\napi-1.duo.example\n/admin/v1/users"
    signature = hmac.new(b"skey", canonical.encode(), hashlib.sha1).hexdigest()
    assert headers == {
        "authorization": basic("ikey", signature),
        "x-static": "fixed",
        "date": date,
        "x-request-id": "rid-1",
        "x-echo-id": "rid-1",
    }


def test_dynamic_header_missing_request_values_keeps_the_default() -> None:
    duo = custom_provider(DUO_LIKE, auth_mode="BASIC")
    credentials = {"type": "BASIC", "username": "ikey", "password": "skey"}
    injection = build_injection(connection(credentials), duo, None)
    headers = dict(render_dynamic(injection, {}, clock=lambda: MOMENT))
    assert headers["authorization"] == basic("ikey", "skey")
    assert "date" in headers


def test_render_dynamic_without_dynamic_headers_returns_static_ones() -> None:
    injection = Injection(headers=(("a", "1"),))
    assert render_dynamic(injection, {"method": "GET"}) == (("a", "1"),)


def test_dynamic_query_entries_are_not_frozen_at_cache_fill() -> None:
    custom = custom_provider("        query:\n            ts: ${now:X}\n            k: ${apiKey}\n")
    injection = build_injection(connection({"type": "API_KEY", "apiKey": "k"}), custom, None)
    assert injection.query == (("k", "k"),)


def test_injection_repr_hides_values() -> None:
    custom = custom_provider(
        "        headers:\n            x-sig: ${sha256Hex(${method}${apiKey})}\n"
        "        query:\n            key: ${apiKey}\n"
    )
    injection = build_injection(
        connection({"type": "OAUTH2", "access_token": SECRET, "apiKey": SECRET}), custom, None
    )
    text = repr(injection)
    assert SECRET not in text
    assert "authorization" in text
    assert "key" in text
    assert "x-sig" in text


# --- OAuth 1.0a: a fresh signature per request -------------------------------------------------

CONSUMER_KEY = "consumer-key-1"
CONSUMER_SECRET = "consumer-" + SECRET
TOKEN = "token-1-not-for-logs"
TOKEN_SECRET = "token-" + SECRET
OAUTH1 = {"type": "OAUTH1", "oauth_token": TOKEN, "oauth_token_secret": TOKEN_SECRET}
OAUTH1_CLIENT = {"type": "OAUTH1", "client_id": CONSUMER_KEY, "client_secret": CONSUMER_SECRET}
VERIFIERS = {
    "HMAC-SHA1": oauth_signature.verify_hmac_sha1,
    "HMAC-SHA256": oauth_signature.verify_hmac_sha256,
    "PLAINTEXT": oauth_signature.verify_plaintext,
}


def oauth1_provider(signature_method: str | None = None, proxy_yaml: str = "") -> Provider:
    text = "o:\n    display_name: O\n    auth_mode: OAUTH1\n"
    if signature_method is not None:
        text += f"    signature_method: {signature_method}\n"
    text += "    proxy:\n        base_url: https://api.example.com\n" + proxy_yaml
    return parse_catalogue(text, "test.yaml")["o"]


def oauth1_injection(
    signature_method: str | None = None,
    credentials: dict[str, Any] = OAUTH1,
    client: dict[str, Any] | None = OAUTH1_CLIENT,
    proxy_yaml: str = "",
) -> Injection:
    return build_injection(
        connection(credentials), oauth1_provider(signature_method, proxy_yaml), integration(client)
    )


def signed_header(injection: Injection, method: str, url: str) -> str:
    assert injection.signer is not None
    headers = dict(injection.signer(method, url))
    assert list(headers) == ["authorization"]
    return headers["authorization"]


def oauth_params(header: str) -> dict[str, str]:
    """The header's protocol parameters, decoded."""
    assert header.startswith("OAuth ")
    authorization = {"Authorization": header}
    return dict(
        oauth_signature.collect_parameters(headers=authorization, exclude_oauth_signature=False)
    )


def oauthlib_verifies(
    method: str,
    url: str,
    header: str,
    *,
    consumer_secret: str = CONSUMER_SECRET,
    token_secret: str = TOKEN_SECRET,
) -> bool:
    """oauthlib's server side: recompute the signature of the request a provider got."""
    verb: Any = method  # the stubs want a Literal
    request: Any = OAuthRequest(url, verb, headers={"Authorization": header})
    request.signature = oauth_params(header)["oauth_signature"]
    request.params = oauth_signature.collect_parameters(
        uri_query=urlsplit(url).query, headers={"Authorization": header}
    )
    verify = VERIFIERS[oauth_params(header)["oauth_signature_method"]]
    return bool(verify(request, consumer_secret, token_secret))


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, "HMAC-SHA1"),
        ("HMAC-SHA1", "HMAC-SHA1"),
        ("HMAC-SHA256", "HMAC-SHA256"),
        ("hmac-sha256", "HMAC-SHA256"),
        ("PLAINTEXT", "PLAINTEXT"),
    ],
)
def test_oauth1_signature_verifies(configured: str | None, expected: str) -> None:
    injection = oauth1_injection(configured)
    assert injection.headers == ()  # nothing static: the header is made per request
    url = "https://api.example.com/1.1/statuses/home_timeline.json"
    header = signed_header(injection, "get", url)
    params = oauth_params(header)
    assert params["oauth_signature_method"] == expected
    assert params["oauth_consumer_key"] == CONSUMER_KEY
    assert params["oauth_token"] == TOKEN
    assert params["oauth_version"] == "1.0"
    assert oauthlib_verifies("GET", url, header)
    assert not oauthlib_verifies("GET", url, header, token_secret="other")
    assert not oauthlib_verifies("GET", url, header, consumer_secret="other")


@pytest.mark.parametrize("method", ["HMAC-SHA1", "HMAC-SHA256"])
def test_oauth1_signs_method_url_and_every_query_parameter(method: str) -> None:
    injection = oauth1_injection(method)
    url = "https://api.example.com/search?q=a%20b+c&count=5&x=1&x=2&empty="
    header = signed_header(injection, "POST", url)
    assert oauthlib_verifies("POST", url, header)
    assert not oauthlib_verifies("GET", url, header)
    assert not oauthlib_verifies("POST", url.replace("count=5", "count=6"), header)
    assert not oauthlib_verifies("POST", url.replace("&x=2", ""), header)
    assert not oauthlib_verifies("POST", url.partition("?")[0], header)
    assert not oauthlib_verifies("POST", url.replace("/search", "/other"), header)


def test_oauth1_nonce_and_timestamp_are_fresh_per_request() -> None:
    injection = oauth1_injection()
    url = "https://api.example.com/me"
    headers = [signed_header(injection, "GET", url) for _ in range(5)]
    nonces = {oauth_params(header)["oauth_nonce"] for header in headers}
    assert len(nonces) == 5
    for header in headers:
        assert abs(int(oauth_params(header)["oauth_timestamp"]) - time.time()) < 60
        assert oauthlib_verifies("GET", url, header)


def test_oauth1_query_characters_oauthlib_refuses_are_signed_as_the_server_decodes_them() -> None:
    # Sent raw on the wire (servers accept them); a provider decodes `[` to `[` and a
    # stray `%` to `%`, which is the canonical URL below. The fragment never travels.
    raw = "https://api.example.com/s?tags=[a]|{b}&pct=100%&ok=%E2%9C%93#frag"
    canonical = "https://api.example.com/s?tags=%5Ba%5D%7C%7Bb%7D&pct=100%25&ok=%E2%9C%93"
    header = signed_header(oauth1_injection(), "GET", raw)
    assert oauthlib_verifies("GET", canonical, header)


def test_oauth1_unsignable_url_is_refused_without_echo() -> None:
    injection = oauth1_injection()
    assert injection.signer is not None
    with pytest.raises(UnsignableRequest) as caught:
        injection.signer("GET", f"https://api.example.com:99999/x?key={SECRET}")
    assert isinstance(caught.value, InjectionError)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("credentials", "client", "field"),
    [
        ({"type": "OAUTH1", "oauth_token_secret": TOKEN_SECRET}, OAUTH1_CLIENT, "oauth_token"),
        ({"type": "OAUTH1", "oauth_token": TOKEN}, OAUTH1_CLIENT, "oauth_token_secret"),
        ({**OAUTH1, "oauth_token_secret": ""}, OAUTH1_CLIENT, "oauth_token_secret"),
        ({**OAUTH1, "oauth_token_secret": 12}, OAUTH1_CLIENT, "oauth_token_secret"),
        ({**OAUTH1, "oauth_token": SECRET + "\r\nx-evil: 1"}, OAUTH1_CLIENT, "oauth_token"),
        (OAUTH1, None, "client_id"),
        (OAUTH1, {"type": "OAUTH1", "client_secret": CONSUMER_SECRET}, "client_id"),
        (OAUTH1, {"type": "OAUTH1", "client_id": CONSUMER_KEY}, "client_secret"),
    ],
)
def test_oauth1_unusable_fields_are_named_never_echoed(
    credentials: dict[str, Any], client: dict[str, Any] | None, field: str
) -> None:
    with pytest.raises(InvalidCredentialValue) as caught:
        oauth1_injection(credentials=credentials, client=client)
    assert caught.value.field == field
    assert caught.value.credential_type == "OAUTH1"
    for secret in (SECRET, TOKEN, CONSUMER_KEY, "x-evil"):
        assert secret not in str(caught.value)


@pytest.mark.parametrize("configured", ["RSA-SHA1", "HMAC-MD5", "5"])
def test_oauth1_signature_methods_we_cannot_produce(configured: str) -> None:
    with pytest.raises(UnsupportedAuth) as caught:
        oauth1_injection(configured)
    assert caught.value.credential_type == "OAUTH1"
    assert "signature" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_oauth1_provider_headers_stay_static_next_to_the_signer() -> None:
    injection = oauth1_injection(proxy_yaml="        headers:\n            x-extra: fixed\n")
    assert injection.headers == (("x-extra", "fixed"),)
    assert injection.signer is not None


def test_only_signing_modes_get_a_signer() -> None:
    oauth2 = build_injection(
        connection({"type": "OAUTH2", "access_token": "a"}), custom_provider(""), None
    )
    assert oauth2.signer is None
    assert oauth1_injection().signer is not None


def test_oauth1_reprs_hide_keys_tokens_and_secrets() -> None:
    injection = oauth1_injection("HMAC-SHA256")
    for text in (repr(injection), repr(injection.signer), str(injection.signer)):
        assert "HMAC-SHA256" in text
        for secret in (SECRET, TOKEN, CONSUMER_KEY):
            assert secret not in text


def test_oauth1_signing_logs_no_query_values_or_tokens(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="oauthlib")
    signed_header(oauth1_injection(), "GET", "https://api.example.com/x?query_value=qv-1234")
    logged = " ".join(record.getMessage() for record in caplog.records)
    for secret in ("qv-1234", TOKEN, SECRET):
        assert secret not in logged
